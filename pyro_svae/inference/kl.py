"""The KL terms of the ELBO, per sentence: what training's objectives and evaluation share."""

import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence


def elbo_terms(svae, batch):
    """-> (rec [B], kl [B]): log p(x|z) at z ~ q(z|x), and KL(q || p) summed over the latent sites
    (analytic where Pyro has it, else the one-draw estimate log q(z|x) - log p(z)). For the LM, kl = 0."""
    return terms_of(svae, *elbo_traces(svae, batch))


def elbo_traces(svae, batch):
    """-> (guide trace, model trace replayed on the guide's draws) of one batch."""
    guide_tr = poutine.trace(svae.guide).get_trace(batch)
    return guide_tr, poutine.trace(poutine.replay(svae.model, trace=guide_tr)).get_trace(batch)


def terms_of(svae, guide_tr, model_tr):
    """``elbo_terms`` from the traces of ``elbo_traces``."""
    x = model_tr.nodes["x"]
    rec = x["fn"].log_prob(x["value"])
    kl = torch.zeros_like(rec)
    for site in svae.latent_sites:
        kl = kl + kl_term(guide_tr.nodes[site]["fn"], model_tr.nodes[site]["fn"], guide_tr.nodes[site]["value"])
    return rec, kl


def latent_traces(svae, batch):
    """-> (guide trace, prior trace replayed on the guide's draws): the latent sites' q and p,
    without running the decoder."""
    guide_tr = poutine.trace(svae.guide).get_trace(batch)
    return guide_tr, poutine.trace(poutine.replay(svae.prior.sample, trace=guide_tr)).get_trace(batch.size, svae.device)


def latent_kl(svae, batch):
    """KL(q(z|x) || p(z)) per sentence [B], without running the decoder."""
    guide_tr, prior_tr = latent_traces(svae, batch)
    return sum(kl_term(guide_tr.nodes[s]["fn"], prior_tr.nodes[s]["fn"], guide_tr.nodes[s]["value"])
               for s in svae.latent_sites)


def kl_term(q, p, z):
    """KL(q || p) per sentence: analytic where Pyro registers it, else log q(z) - log p(z) at z."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z)
