"""Training objectives beyond Pyro's ELBOs: free bits (Kingma et al. 2016) and the
importance-weighted bound (Burda et al. 2016)."""

import math

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item
from pyro.poutine.util import site_is_subsample

from .errors import SVAEError
from .evaluation import kl_term
from .model import BETA_FLOOR


def latent_sites(guide_trace):
    return [name for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)]


def kl_floor(guide_trace, model_trace, free_bits):
    """-> (KL, shortfall): the batch-averaged KL(q || p) of the latent sites, and how far it falls
    below the floor, sum over units of max(0, floor - KL_unit). With the diagonal guide the units
    are the dimensions of z (floor ``free_bits`` each, analytic KL; Kingma et al. 2016); with any
    other family the unit is the whole latent (floor ``free_bits`` x its dimensions; KL analytic
    where Pyro registers it, else from the drawn z). KL + shortfall = sum of max(KL_unit, floor)."""
    sites = latent_sites(guide_trace)
    q = guide_trace.nodes[sites[0]]["fn"]
    if sites == ["z"] and isinstance(getattr(q, "base_dist", None), dist.Normal):
        kl = kl_divergence(q.base_dist, model_trace.nodes["z"]["fn"].base_dist).mean(0)  # [Z]
        return kl.sum(), (free_bits - kl).clamp(min=0).sum()
    total, dims = 0.0, 0
    for name in sites:
        value = guide_trace.nodes[name]["value"]
        total = total + _kl(guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"], value)
        dims += value.shape[-1]
    kl = total.mean()
    return kl, (free_bits * dims - kl).clamp(min=0)


def _kl(q, p, value):
    """KL(q || p) per row, by evaluation.kl_term, with a diagonal Gaussian p taken as a
    MultivariateNormal against a Gaussian q, so that Pyro's analytic KL applies there too."""
    if isinstance(q, (dist.MultivariateNormal, dist.LowRankMultivariateNormal)) \
            and isinstance(getattr(p, "base_dist", None), dist.Normal):
        p = dist.MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))
    return kl_term(q, p, value)


class FreeBitsELBO(TraceMeanField_ELBO):
    """The ELBO with a KL floor: the KL term, averaged over the minibatch, counts as at least the
    floor (``free_bits`` nats per latent dimension). Below the floor the KL has no gradient, so the
    encoder is free to use those nats (a remedy for posterior collapse). With the diagonal guide
    the floor applies to each dimension, with the other families to the total KL (``kl_floor``)."""

    def __init__(self, free_bits, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = free_bits

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = model_trace.nodes["x"]["log_prob_sum"]  # scaled by the plate
        sites = latent_sites(guide_trace)
        if sites:
            kl, shortfall = kl_floor(guide_trace, model_trace, self.free_bits)
            site = guide_trace.nodes[sites[0]]
            scale = site["scale"]  # beta * corpus / batch
            elbo = elbo - scale * site["value"].shape[0] * (kl + shortfall)
        return -torch_item(elbo), -elbo


class ImportanceWeightedELBO:
    """The importance-weighted bound (IWAE, Burda et al. 2016), a loss for ``pyro.infer.SVI``:
    per sentence, log (1/K) sum_k p(x, z_k) / q(z_k | x) with z_k ~ q(z | x), K = ``num_particles``.
    It is at least the ELBO and tends to log p(x) as K grows, so training on it improves the
    marginal likelihood rather than the ELBO. K = 1 is the ELBO.

    The K draws are folded into the batch (sentence-major); the latent sites keep their KL scale
    beta, and the total is scaled to the corpus like Pyro's ELBOs (``size`` sentences).

    ``free_bits`` > 0 adds FreeBitsELBO's floor as a penalty, beta * size * the shortfall of the
    batch-averaged KL below the floor (``kl_floor``): with K = 1 it is FreeBitsELBO. The
    bound alone lets q(z|x) drift towards the prior; the floor keeps the latent informative."""

    def __init__(self, num_particles, free_bits=0.0):
        if num_particles < 1:
            raise SVAEError("the importance-weighted bound needs at least one particle")
        self.num_particles, self.free_bits = num_particles, free_bits

    def log_weights(self, model, guide, batch, *args, **kwargs):
        """-> log p(x, z_k) - log q(z_k | x) per sentence and draw [B, K], beta-scaled latent terms."""
        k = self.num_particles
        repeated = batch.repeat(k)
        kwargs = dict(kwargs, size=None)  # no subsample scale inside the log-sum-exp
        guide_tr = poutine.trace(guide).get_trace(repeated, *args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(repeated, *args, **kwargs)
        log_w = _scaled_log_prob(model_tr) - _scaled_log_prob(guide_tr)
        return log_w.view(batch.size, k), guide_tr, model_tr

    def __call__(self, model, guide, batch, *args, size=None, beta=1.0, **kwargs):
        """The loss: minus the bound summed over the batch, times ``size`` / batch size (plus the
        free-bits penalty)."""
        log_w, guide_tr, model_tr = self.log_weights(model, guide, batch, *args, beta=beta, **kwargs)
        bound = torch.logsumexp(log_w, dim=1) - math.log(self.num_particles)
        loss = -bound.sum() * ((size or batch.size) / batch.size)
        if self.free_bits > 0 and latent_sites(guide_tr):
            _, shortfall = kl_floor(guide_tr, model_tr, self.free_bits)  # rows repeat each sentence K times
            loss = loss + max(beta, BETA_FLOOR) * (size or batch.size) * shortfall
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """For SVI: the loss, after its backward pass (the graph is not retained)."""
        loss = self(model, guide, *args, **kwargs)
        loss.backward()
        return torch_item(loss)


def _scaled_log_prob(trace):
    """Sum over a trace's sample sites of scale * log_prob(value), per row [N]."""
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample":
            total = total + site["scale"] * site["fn"].log_prob(site["value"])
    return total
