"""Training objectives beyond Pyro's ELBOs: free bits (Kingma et al. 2016) for every latent,
continuous or discrete, on top of Pyro's mean-field, enumerated and score-function ELBOs, and
the importance-weighted bound (Burda et al. 2016)."""

import math

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import site_is_subsample

from ..models.discrete import OneHotCode
from ..errors import SVAEError
from .kl import kl_term
from ..models.vae import kl_weight


def latent_sites(guide_trace):
    return [name for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)]


def kl_floor(guide_trace, model_trace, free_bits):
    """-> (KL, shortfall): the batch-averaged KL(q || p) of the latent sites, and how far it falls
    below the floor, sum over units of max(0, floor - KL_unit). A unit is a dimension of a
    diagonal Gaussian z (floor ``free_bits`` each, analytic KL; Kingma et al. 2016) or a variable
    of a categorical site (floor ``free_bits``, exact KL); every other site is pooled into one
    unit (floor ``free_bits`` x its dimensions; KL analytic where Pyro registers it, else from
    the drawn value, against the marginal where the model enumerates a parent).

    KL + shortfall = sum of max(KL_unit, floor): below the floor the encoder feels no KL. For the
    first latent site, whose prior depends on no other draw of the guide (the mixture's z under
    enum, its c under concrete or reinforce), the shortfall is measured against the prior with its
    parameters detached, so that a learned prior still fits the posteriors below the floor. A later
    site's prior may read an earlier draw (p(z2 | z1), p(z | c)); detaching it would cut that path
    too and let the encoder feel the KL, so there the floored prior gets no gradient."""
    units, pooled, pooled_dims = unit_kls(guide_trace, model_trace)
    kl = sum((u.mean(0).sum() for u in units), 0.0) + (pooled.mean(0) if pooled_dims else 0.0)
    sites = latent_sites(guide_trace)
    if sites and _learned(model_trace.nodes[sites[0]]["fn"]):
        units, pooled, pooled_dims = unit_kls(guide_trace, model_trace, detach_first=True)
    means = [u.mean(0) for u in units]
    return kl, floor_shortfall(means, pooled.mean(0) if pooled_dims else 0.0, pooled_dims, free_bits)


def unit_kls(guide_trace, model_trace, detach_first=False):
    """The latent sites' KL(q || p) by the floor's units: -> (units, pooled, pooled_dims), units a
    list of [B, U] (a diagonal Gaussian's dimensions, a code's variables), pooled [B] the KL of
    every other site summed (0.0 if none), pooled_dims their dimensions. detach_first: the first
    site's prior parameters as constants (``kl_floor``)."""
    units, pooled, pooled_dims = [], 0.0, 0
    for i, name in enumerate(latent_sites(guide_trace)):
        kl, per_unit = site_kl(name, guide_trace, model_trace, detach_prior=detach_first and i == 0)
        if per_unit:
            units.append(kl)
        else:
            pooled, pooled_dims = pooled + kl, pooled_dims + guide_trace.nodes[name]["value"].shape[-1]
    return units, pooled, pooled_dims


def floor_shortfall(unit_means, pooled_mean, pooled_dims, free_bits):
    """sum over units of max(0, floor - KL_unit), from the units' batch-averaged KLs ([U] each) and
    the pooled sites' (a scalar, whose floor is ``free_bits`` x ``pooled_dims``)."""
    shortfall = sum(((free_bits - u).clamp(min=0).sum() for u in unit_means), 0.0)
    if pooled_dims:
        shortfall = shortfall + (free_bits * pooled_dims - pooled_mean).clamp(min=0)
    return shortfall


def site_kl(name, guide_trace, model_trace, detach_prior=False):
    """KL(q || p) of one latent site: -> ([B, U] per unit, True) or ([B] for the site, False).
    detach_prior: the prior's parameters as constants."""
    prior = _detached if detach_prior else (lambda fn: fn)
    q, p = guide_trace.nodes[name]["fn"], prior(model_trace.nodes[name]["fn"])
    value = guide_trace.nodes[name]["value"]
    enumerated = [s for s in model_trace.nodes.values()
                  if s["type"] == "sample" and s["infer"].get("_enumerate_dim") is not None]
    if enumerated:  # p(z) = sum_c p(c) p(z | c): log q(z) - log p(z) at the draw
        log_p = p.log_prob(value)
        for s in enumerated:
            log_p = torch.logsumexp(log_p + prior(s["fn"]).log_prob(s["value"]), dim=s["infer"]["_enumerate_dim"])
        return q.log_prob(value) - log_p, False
    if isinstance(q, OneHotCode) and isinstance(p, OneHotCode):
        return q.kl_units(p), True
    if name == "z" and isinstance(getattr(q, "base_dist", None), dist.Normal) \
            and isinstance(getattr(p, "base_dist", None), dist.Normal):
        return kl_divergence(q.base_dist, p.base_dist), True
    return _kl(q, p, value), False


def _learned(fn):
    """Whether a prior distribution depends on trained parameters (Normal-based or a code)."""
    base = getattr(fn, "base_dist", fn)
    return any(getattr(base, k, torch.zeros(())).requires_grad for k in ("loc", "scale", "logits"))


def _detached(fn):
    """The same Normal-based or categorical distribution with its parameters as constants."""
    if isinstance(fn, dist.Independent):
        return dist.Independent(_detached(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.Normal):
        return dist.Normal(fn.loc.detach(), fn.scale.detach())
    if isinstance(fn, OneHotCode):
        return OneHotCode(fn.logits.detach(), fn.temperature, fn.straight_through)
    return fn


def _kl(q, p, value):
    """KL(q || p) per row, by evaluation.kl_term, with a diagonal Gaussian p taken as a
    MultivariateNormal against a Gaussian q, so that Pyro's analytic KL applies there too."""
    if isinstance(q, (dist.MultivariateNormal, dist.LowRankMultivariateNormal)) \
            and isinstance(getattr(p, "base_dist", None), dist.Normal):
        p = dist.MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))
    return kl_term(q, p, value)


def scaled(weight, x):
    """weight x x, for a Python float weight or a 0-d float64 tensor (a traced step's KL weight,
    training/step.py): either way computed as Python computes the float, then cast to x's dtype."""
    return x * (weight.to(x.dtype) if isinstance(weight, torch.Tensor) else weight)


def floor_penalty(guide_trace, model_trace, free_bits):
    """The free-bits floor as a penalty on top of an ELBO: scale x batch x shortfall, where scale
    is the latent sites' (beta x corpus / batch). 0 without latent sites or floor."""
    sites = latent_sites(guide_trace)
    if not sites or free_bits <= 0:
        return 0.0
    site = guide_trace.nodes[sites[0]]
    _, shortfall = kl_floor(guide_trace, model_trace, free_bits)
    return scaled(site["scale"] * site["value"].shape[0], shortfall)


class OnDevice:
    """The loss of an ELBO left on the device: ``loss_and_grads`` returns a 0-d tensor, and no
    site's log-density is read back to the host (Pyro's ELBOs call ``.item()`` per site and per
    particle, a host synchronization each on a GPU). A subclass's ``_differentiable_loss_particle``
    returns (value, differentiable loss), both tensors.

    With validation off (as in training), a particle's traces are the guide's and the model's
    replayed against it, without the subsample sites, and nothing more: each site's log-density
    is computed when the loss reads it (``Trace.log_prob_sum``), not all of them in advance
    (Pyro's ``get_importance_trace`` copies both traces and computes every site's log-density and
    the guide's score parts, which an analytic KL never reads). With validation on, Pyro's checks
    run as in its own ELBOs."""

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():
            return super()._get_trace(model, guide, args, kwargs)
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        for trace in (model_trace, guide_trace):
            for name in [name for name, site in trace.nodes.items() if site_is_subsample(site)]:
                trace.remove_node(name)
        return model_trace, guide_trace

    def differentiable_loss(self, model, guide, *args, **kwargs):
        losses = [self._differentiable_loss_particle(model_trace, guide_trace)[1]
                  for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs)]
        return losses[0] if len(losses) == 1 else sum(losses) / len(losses)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """For SVI: the loss (a detached 0-d tensor), after its backward pass."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.detach()


def observed_log_prob(model_trace):
    """Sum of the model's observed sites' scaled log-densities: the sentences and every
    ``pyro.factor`` (the bag-of-words term)."""
    return model_trace.log_prob_sum(lambda name, site: site["is_observed"])


class ReparamELBO(OnDevice, Trace_ELBO):
    """``Trace_ELBO``'s estimate, log p(x, z) - log q(z | x) at one draw per particle, computed on
    the device. Every guide family here is reparameterized, so the loss is its own surrogate; a
    site without ``rsample`` gets Trace_ELBO's score-function surrogate (value unchanged)."""

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        if all(s["fn"].has_rsample for s in guide_trace.nodes.values() if s["type"] == "sample"):
            elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
            return -elbo.detach(), -elbo
        model_trace.compute_log_prob()  # not computed in advance (OnDevice._get_trace)
        guide_trace.compute_score_parts()
        value, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        loss = value + (surrogate - surrogate.detach())
        return loss.detach(), loss


class FreeBitsELBO(OnDevice, TraceMeanField_ELBO):
    """The ELBO with a KL floor: the KL term, averaged over the minibatch, counts as at least the
    floor (``free_bits`` nats per latent dimension). Below the floor the KL has no gradient, so the
    encoder is free to use those nats (a remedy for posterior collapse). With the diagonal guide
    the floor applies to each dimension, with the other families to the total KL (``kl_floor``).
    Every KL is analytic where one exists, so with ``free_bits`` 0 this is the mean-field ELBO
    (the Concrete estimator's: the exact categorical KL, the relaxed draw elsewhere)."""

    def __init__(self, free_bits, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = free_bits

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = observed_log_prob(model_trace)  # scaled by the plate
        sites = latent_sites(guide_trace)
        if sites:
            kl, shortfall = kl_floor(guide_trace, model_trace, self.free_bits)
            site = guide_trace.nodes[sites[0]]
            scale = site["scale"]  # beta * corpus / batch
            elbo = elbo - scaled(scale * site["value"].shape[0], kl + shortfall)
        return -elbo.detach(), -elbo


class EnumELBO(TraceEnum_ELBO):
    """``TraceEnum_ELBO`` for the model's enumerated sites (a mixture prior's component, summed out
    exactly; one plate over sentences), with the free-bits floor of ``kl_floor`` as a penalty."""

    def __init__(self, free_bits=0.0):
        super().__init__(max_plate_nesting=1)
        self.free_bits = free_bits

    def penalty(self, guide_trace, model_trace):
        """The free-bits penalty subtracted from a particle's ELBO (``floor_penalty``)."""
        return floor_penalty(guide_trace, model_trace, self.free_bits)

    def _elbos(self, model, guide, args, kwargs):
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            yield _compute_dice_elbo(model_trace, guide_trace) - self.penalty(guide_trace, model_trace)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return -sum(self._elbos(model, guide, args, kwargs)) / self.num_particles

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.detach()


class ScoreFunctionELBO(TraceGraph_ELBO):
    """``TraceGraph_ELBO``: the score-function estimator for the guide's non-reparameterized
    sites (with their baselines), pathwise elsewhere; plus the free-bits floor as a penalty,
    differentiated pathwise only (its dependence on a discrete draw is not scored)."""

    def __init__(self, free_bits=0.0):
        super().__init__()
        self.free_bits = free_bits

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        elbo, surrogate_loss = super()._loss_and_surrogate_loss_particle(model_trace, guide_trace)
        penalty = floor_penalty(guide_trace, model_trace, self.free_bits)
        return elbo - torch_item(penalty), surrogate_loss + penalty


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
            loss = loss + scaled(kl_weight(beta) * (size or batch.size), shortfall)
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """For SVI: the loss (a detached 0-d tensor), after its backward pass (the graph is not retained)."""
        loss = self(model, guide, *args, **kwargs)
        loss.backward()
        return loss.detach()


def _scaled_log_prob(trace):
    """Sum over a trace's sample sites of scale * log_prob(value), per row [N]."""
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample":
            total = total + site["scale"] * site["fn"].log_prob(site["value"])
    return total


class DocumentELBO(OnDevice, Trace_ELBO):
    """The ELBO of the document model (models/documents.py), log p(x, z) - log q(z | x) at one draw,
    with free bits per sentence: the batch's KL, log q(z) - log p(z) at the draw summed over its
    documents, counts as at least ``free_bits`` x Z nats per sentence (the floor measured against
    the chain with its parameters detached, so that the chain still fits the posteriors below it)."""

    def __init__(self, free_bits=0.0, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = free_bits

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
        if self.free_bits > 0:
            q, p = guide_trace.nodes["z"], model_trace.nodes["z"]
            z = q["value"]
            kl = (q["fn"].log_prob(z) - p["fn"].detached().log_prob(z)).sum()
            floor = self.free_bits * z.shape[-1] * p["fn"].mask.sum()
            elbo = elbo - q["scale"] * (floor - kl).clamp(min=0)
        return -elbo.detach(), -elbo
