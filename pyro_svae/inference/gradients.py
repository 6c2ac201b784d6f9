"""Why reparameterization wins: the variance of the ELBO's gradient with respect to the guide's
parameters under the pathwise estimator (Trace_ELBO on reparameterized draws) and under the
score-function estimator (the same guide with reparameterization switched off, scored by
TraceGraph_ELBO, optionally with a decaying-average baseline).

For a discrete site (a mixture prior's component c with its q(c|x)), the same comparison over
q(c|x)'s parameters: the exact sum over c (the guide's c enumerated by TraceEnum_ELBO), the
score function without and with the learned baseline, and the biased Concrete relaxation."""

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from pyro.poutine.messenger import Messenger

from ..errors import SVAEError

ESTIMATORS = ("reparam", "reinforce", "reinforce+baseline")
DISCRETE_ESTIMATORS = ("enum", "reinforce", "reinforce+baseline", "concrete")


def without_rsample(fn):
    """The same distribution, sampled without reparameterization (wrappers delegate to their base)."""
    if isinstance(fn, dist.Independent):
        return dist.Independent(without_rsample(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.TransformedDistribution):
        return dist.TransformedDistribution(without_rsample(fn.base_dist), fn.transforms)
    return fn.has_rsample_(False)


class _NoReparam(Messenger):
    """Sample every latent site without reparameterization (score-function gradients)."""

    def _pyro_sample(self, msg):
        if not msg["is_observed"]:
            msg["fn"] = without_rsample(msg["fn"])


def score_function_guide(guide, baseline=False):
    def config(site):
        if site["type"] == "sample" and not site["is_observed"] and baseline:
            return {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}
        return {}

    return _NoReparam()(poutine.infer_config(guide, config_fn=config))


def gradient_samples(model, guide, params, estimator="reparam", samples=200, *args, progress=False, **kwargs):
    """``samples`` one-draw estimates of the gradient of -ELBO w.r.t. ``params``
    ({group: [tensors]}): -> {group: [samples, P]}."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; use {', '.join(ESTIMATORS)}")
    if estimator == "reparam":
        loss = Trace_ELBO()
    else:
        loss, guide = TraceGraph_ELBO(), score_function_guide(guide, baseline=estimator.endswith("baseline"))
    from ..progress import progress_bar

    out = {group: [] for group in params}
    for _ in progress_bar(range(samples), desc=estimator, disable=not progress):
        for tensors in params.values():
            for p in tensors:
                p.grad = None
        loss.loss_and_grads(model, guide, *args, **kwargs)
        for group, tensors in params.items():
            out[group].append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                         for p in tensors]))
    return {group: torch.stack(rows) for group, rows in out.items()}


def summarize(grads):
    """[S, P] -> mean gradient norm, its standard error, and total variance (trace of the covariance)."""
    mean = grads.mean(0)
    variance = grads.var(0, unbiased=True)
    return {"mean_norm": float(mean.norm()), "variance": float(variance.sum()),
            "mean_stderr": float((variance.sum() / grads.shape[0]).sqrt())}


def guide_gradient_variance(svae, batch, estimators=ESTIMATORS, samples=200, progress=False):
    """Per parameter group of the guide (encoder, posterior head): {estimator: summary}."""
    svae.train(False)
    groups = {"encoder": list(svae.encoder.parameters()), "posterior": list(svae.posterior.parameters())}
    report = {}
    for estimator in estimators:
        grads = gradient_samples(svae.model, svae.guide, groups, estimator, samples, batch, progress=progress)
        report[estimator] = {group: summarize(g) for group, g in grads.items()}
    return report


def component_gradient_samples(svae, batch, estimator="enum", samples=200, temperature=0.5, size=None, progress=False):
    """``samples`` one-draw estimates of the gradient of -ELBO w.r.t. q(c|x)'s parameters (a
    mixture prior trained by concrete or reinforce): -> [samples, P]. ``enum`` sums over c exactly
    (only z is drawn); ``concrete`` differentiates the relaxation at ``temperature``."""
    from ..progress import progress_bar

    from .objectives import FreeBitsELBO

    if svae.component is None:
        raise SVAEError("the discrete-site gradients need q(c|x): a mixture run trained with --discrete concrete or reinforce")
    if estimator not in DISCRETE_ESTIMATORS:
        raise SVAEError(f"unknown estimator {estimator!r}; use {', '.join(DISCRETE_ESTIMATORS)}")
    svae.train(False)
    kwargs = dict(size=size, discrete="concrete" if estimator == "concrete" else "reinforce", temperature=temperature)
    guide = svae.guide
    if estimator == "enum":
        loss = TraceEnum_ELBO(max_plate_nesting=1)
        guide = poutine.infer_config(guide, lambda site: {"enumerate": "parallel", "baseline": {}} if site["name"] == "c" else {})
    elif estimator == "concrete":
        loss = FreeBitsELBO(0.0)
    else:
        loss = TraceGraph_ELBO()
        if estimator == "reinforce":
            guide = poutine.infer_config(guide, lambda site: {"baseline": {}} if site["name"] == "c" else {})
    params = list(svae.component.logits.parameters())
    rows = []
    for _ in progress_bar(range(samples), desc=estimator, disable=not progress):
        for p in svae.parameters():
            p.grad = None
        loss.loss_and_grads(svae.model, guide, batch, **kwargs)
        rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]))
    return torch.stack(rows)


def component_gradient_variance(svae, batch, estimators=DISCRETE_ESTIMATORS, samples=200, temperature=0.5,
                                progress=False):
    """{estimator: summary (``summarize``) of the q(c|x) gradient, plus "bias_norm": the distance of
    its mean from the exact (enum) mean gradient}."""
    grads = {e: component_gradient_samples(svae, batch, e, samples, temperature, progress=progress)
             for e in dict.fromkeys(("enum",) + tuple(estimators))}
    exact = grads["enum"].mean(0)
    return {e: {**summarize(grads[e]), "bias_norm": float((grads[e].mean(0) - exact).norm())} for e in estimators}
