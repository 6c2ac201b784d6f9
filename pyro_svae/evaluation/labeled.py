"""Evaluating a --prior class model (models/labeled.py): the marginal likelihood with the label
summed out, the ELBO, and how well q(y | x) classifies the split's labeled sentences.

    log p(x) = logsumexp_y [log p(y) + log p(x | y)],
    log p(x | y) ~= logsumexp_k [log p(x | z_k, y) + log p(z_k) - log q(z_k | x, y)] - log S,
    z_k ~ q(z | x, y), S = ``samples`` draws per class (importance sampling, Burda et al. 2016).
    ELBO(x) = sum_y q(y|x) [mean_k (log p(x|z_k,y) + log p(z_k) - log q(z_k|x,y)) + log p(y) - log q(y|x)]."""

import math

import pyro.distributions as dist
import torch

from ..data.corpus import gather, sorted_batches
from ..devices import forked_rng
from ..models.likelihood import Sentences


def class_log_weights(svae, batch, h, y, samples, chunk):
    """log p(x, z_k | y) - log q(z_k | x, y) for S draws per sentence under class ids y [B]: [B, S]."""
    q, prior = svae.q_z(h, y), dist.Normal(0.0, 1.0)
    out = []
    for start in range(0, samples, chunk):
        z = q.sample((min(chunk, samples - start),))  # [k, B, Z]
        log_px = Sentences(svae.decoder, svae.code(z, y), inputs=batch.inputs).log_prob(batch.targets)  # [k, B]
        out.append((log_px + prior.log_prob(z).sum(-1) - q.log_prob(z)).T)
    return torch.cat(out, dim=1)


@torch.no_grad()
def evaluate_labeled(svae, split, samples=100, batch_size=32, chunk=50, seed=0, progress=True, names=None):
    """-> {"totals": {nll, elbo, ppl_iw, accuracy, labeled, per_class: {name: {sentences, accuracy,
    nll_given_label}}}, "sentences": [{"nll", "elbo", "tokens", "predicted", "label"}]}; nats per
    sentence, tokens counting </s>. Labels, where the split has them, are only compared with."""
    from ..progress import progress_bar

    svae.eval()
    K = svae.classes
    names = names or [str(k) for k in range(K)]
    rows = [None] * len(split)
    with forked_rng(svae.device):
        torch.manual_seed(seed)
        for positions in progress_bar(sorted_batches(split, batch_size), desc="evaluate", unit="batch",
                                      disable=not progress):
            batch = gather(split, positions).to(svae.device)
            h = svae.encoder(batch.targets, batch.lengths)
            log_q_y = svae.q_y(h).logits.log_softmax(-1)  # [B, K]
            per_class = torch.stack([class_log_weights(svae, batch, h, torch.full((batch.size,), c, device=h.device),
                                                       samples, chunk) for c in range(K)])  # [K, B, S]
            log_p_given = torch.logsumexp(per_class, -1) - math.log(samples)  # log p(x | y) [K, B]
            log_px = torch.logsumexp(log_p_given - math.log(K), 0)
            elbo = (log_q_y.exp().T * (per_class.mean(-1) - math.log(K) - log_q_y.T)).sum(0)
            predicted = log_q_y.argmax(-1).tolist()
            labels = batch.labels.tolist() if batch.labels is not None else [-1] * batch.size
            for i, pos in enumerate(positions):
                rows[pos] = {"nll": -float(log_px[i]), "elbo": float(elbo[i]), "tokens": int(batch.lengths[i]),
                             "predicted": names[predicted[i]], "label": names[labels[i]] if labels[i] >= 0 else None,
                             "nll_given_label": -float(log_p_given[labels[i], i]) if labels[i] >= 0 else None}
    n, tokens = len(rows), sum(r["tokens"] for r in rows)
    labeled = [r for r in rows if r["label"] is not None]
    per_class = {}
    for name in names:
        mine = [r for r in labeled if r["label"] == name]
        per_class[name] = {"sentences": len(mine),
                           "accuracy": sum(r["predicted"] == name for r in mine) / len(mine) if mine else None,
                           "nll_given_label": sum(r["nll_given_label"] for r in mine) / len(mine) if mine else None}
    totals = {"sentences": n, "tokens": tokens, "iw_samples": samples, "nll": sum(r["nll"] for r in rows) / n,
              "elbo": sum(r["elbo"] for r in rows) / n, "ppl_iw": math.exp(sum(r["nll"] for r in rows) / tokens),
              "labeled": len(labeled),
              "accuracy": sum(r["predicted"] == r["label"] for r in labeled) / len(labeled) if labeled else None,
              "per_class": per_class}
    return {"totals": totals, "sentences": rows}
