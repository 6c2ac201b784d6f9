"""Per-sentence ELBO terms and validation metrics (beta = 1, no subsample scaling)."""

import math

import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence

from .corpus import gather, sorted_batches
from .devices import forked_rng


def elbo_terms(svae, batch):
    """-> (rec [B], kl [B]): log p(x|z) at z ~ q(z|x), and KL(q || p) (analytic where Pyro has it,
    else the one-sample estimate log q(z|x) - log p(z)). For the LM, kl is zero."""
    guide_tr = poutine.trace(svae.guide).get_trace(batch)
    model_tr = poutine.trace(poutine.replay(svae.model, trace=guide_tr)).get_trace(batch)
    x = model_tr.nodes["x"]
    rec = x["fn"].log_prob(x["value"])
    if "z" not in guide_tr.nodes:
        return rec, torch.zeros_like(rec)
    q, p, z = guide_tr.nodes["z"]["fn"], model_tr.nodes["z"]["fn"], guide_tr.nodes["z"]["value"]
    return rec, kl_term(q, p, z)


def kl_term(q, p, z):
    """KL(q || p) per sentence: analytic where Pyro registers it, else log q(z) - log p(z) at z."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z)


@torch.inference_mode()
def validate(svae, split, batch_size=64, seed=0):
    """Mean ELBO, reconstruction and KL per sentence over ``split``, and the ELBO perplexity bound
    exp(-sum ELBO / tokens), tokens counting </s>. Leaves the global RNG as it found it."""
    was_training = svae.training
    svae.eval()
    totals = {"rec": 0.0, "kl": 0.0, "tokens": 0, "sentences": 0}
    with forked_rng(svae.device):
        torch.manual_seed(seed)
        for positions in sorted_batches(split, batch_size):
            batch = gather(split, positions).to(svae.device)
            rec, kl = elbo_terms(svae, batch)
            totals["rec"] += float(rec.sum())
            totals["kl"] += float(kl.sum())
            totals["tokens"] += batch.num_tokens()
            totals["sentences"] += batch.size
    svae.train(was_training)
    n = max(totals["sentences"], 1)
    elbo = totals["rec"] - totals["kl"]
    return {
        "elbo": elbo / n,
        "rec": -totals["rec"] / n,  # reconstruction loss, nats per sentence
        "kl": totals["kl"] / n,
        "ppl_bound": math.exp(min(-elbo / max(totals["tokens"], 1), 700.0)),
        "sentences": totals["sentences"],
        "tokens": totals["tokens"],
    }
