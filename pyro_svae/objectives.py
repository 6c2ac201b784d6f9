"""Training objectives beyond Pyro's ELBOs: free bits (Kingma et al. 2016) and the
importance-weighted bound (Burda et al. 2016)."""

import math

import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item

from .errors import SVAEError
from .model import BETA_FLOOR


def kl_per_dimension(guide_trace, model_trace):
    """KL(q || p) of each dimension of the latent site z, per row [N, Z] (diag guide only)."""
    q, p = guide_trace.nodes["z"]["fn"], model_trace.nodes["z"]["fn"]
    if not hasattr(q, "base_dist") or not hasattr(q.base_dist, "scale"):
        raise SVAEError("--free-bits needs the diag guide")
    return kl_divergence(q.base_dist, p.base_dist)


class FreeBitsELBO(TraceMeanField_ELBO):
    """The mean-field ELBO with a KL floor per latent dimension: the KL of dimension d, averaged
    over the minibatch, counts as at least ``free_bits`` nats. Below the floor the KL term has no
    gradient, so the encoder is free to use those nats (a remedy for posterior collapse).

    Needs the diagonal guide (the per-dimension KL is analytic there)."""

    def __init__(self, free_bits, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = free_bits

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = model_trace.nodes["x"]["log_prob_sum"]  # scaled by the plate
        if "z" in guide_trace.nodes:
            kl_dims = kl_per_dimension(guide_trace, model_trace)  # [B, Z]
            scale = guide_trace.nodes["z"]["scale"]  # beta * corpus / batch
            elbo = elbo - scale * kl_dims.shape[0] * kl_dims.mean(0).clamp(min=self.free_bits).sum()
        return -torch_item(elbo), -elbo


class ImportanceWeightedELBO:
    """The importance-weighted bound (IWAE, Burda et al. 2016), a loss for ``pyro.infer.SVI``:
    per sentence, log (1/K) sum_k p(x, z_k) / q(z_k | x) with z_k ~ q(z | x), K = ``num_particles``.
    It is at least the ELBO and tends to log p(x) as K grows, so training on it improves the
    marginal likelihood rather than the ELBO. K = 1 is the ELBO.

    The K draws are folded into the batch (sentence-major); the latent sites keep their KL scale
    beta, and the total is scaled to the corpus like Pyro's ELBOs (``size`` sentences).

    ``free_bits`` > 0 adds FreeBitsELBO's floor as a penalty, beta * size * sum_d max(0, fb - KL_d)
    with KL_d the batch-averaged KL of dimension d (diag guide): with K = 1 it is FreeBitsELBO. The
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
        if self.free_bits > 0 and "z" in guide_tr.nodes:
            kl_dims = kl_per_dimension(guide_tr, model_tr).mean(0)  # [Z]; rows repeat each sentence K times
            loss = loss + max(beta, BETA_FLOOR) * (size or batch.size) * (self.free_bits - kl_dims).clamp(min=0).sum()
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
