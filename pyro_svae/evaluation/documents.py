"""Evaluating the document model (models/documents.py): its ELBO, the importance-weighted NLL of
each document, the NLL of each sentence given the document's earlier sentences, and the Story
Cloze choice between two endings. Nats; a sentence's tokens count its </s>."""

import math

import torch
from pyro import poutine

from ..data.corpus import sorted_batches
from ..data.documents import gather_documents, make_document_batch
from ..devices import forked_rng
from ..progress import progress_bar


def per_document(values, batch):
    """Per-sentence values [S] (or [S, ...]) summed per document: [D]."""
    T = max(batch.steps, 1)
    document = (batch.slots // T).to(values.device)
    return values.new_zeros((batch.size,) + values.shape[1:]).index_add(0, document, values)


def document_terms(chain, batch):
    """One draw z ~ q(z | x) per document: (log p(x | z) [D], log q(z) - log p(z) [D])."""
    guide_tr = poutine.trace(chain.guide).get_trace(batch)
    model_tr = poutine.trace(poutine.replay(chain.model, trace=guide_tr)).get_trace(batch)
    x = model_tr.nodes["x"]
    rec = per_document(x["fn"].log_prob(x["value"]), batch)
    z = guide_tr.nodes["z"]
    return rec, z["fn"].log_prob(z["value"]) - model_tr.nodes["z"]["fn"].log_prob(z["value"])


def log_weights(chain, batch, k, chunk=50):
    """log p(x, z_k) - log q(z_k | x) for k draws per document: [D, k] (draws ``chunk`` at a time)."""
    parts = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        rec, kl = document_terms(chain, batch.repeat(n).to(chain.device))
        parts.append((rec - kl).view(batch.size, n))
    return torch.cat(parts, dim=1)


def iw_log_likelihood(chain, batch, k, chunk=50):
    """The K-sample importance-weighted estimate of log p(x) per document [D]."""
    w = log_weights(chain, batch, k, chunk)
    return torch.logsumexp(w, dim=1) - math.log(k)


@torch.no_grad()
def validate_documents(chain, split, batch_size=32, seed=0):
    """Over a DocumentSplit, one draw per document, beta = 1, no subsample scaling: the mean ELBO
    per document and per sentence, the reconstruction loss and KL per sentence. Leaves the global
    RNG as it found it."""
    was_training = chain.training
    chain.eval()
    rec_total, kl_total, sentences, documents = 0.0, 0.0, 0, 0
    with forked_rng(chain.device):
        for i, positions in enumerate(sorted_batches(split, batch_size)):
            torch.manual_seed(seed * 1_000_003 + i)
            batch = gather_documents(split, positions).to(chain.device)
            rec, kl = document_terms(chain, batch)
            rec_total += float(rec.sum())
            kl_total += float(kl.sum())
            sentences += batch.sentences.size
            documents += batch.size
    chain.train(was_training)
    elbo = rec_total - kl_total
    return {"elbo": elbo / max(documents, 1), "elbo_sentence": elbo / max(sentences, 1),
            "rec": -rec_total / max(sentences, 1), "kl": kl_total / max(sentences, 1),
            "documents": documents, "sentences": sentences}


@torch.no_grad()
def evaluate_documents(chain, split, k=100, batch_size=8, limit=0, seed=0, progress=False):
    """IW-NLL (K = ``k``) of each document of a DocumentSplit and of each sentence given the earlier
    ones (-log p(x_{1:t}) + log p(x_{1:t-1}), each term an IW estimate on the prefix), the ELBO and
    KL (over the same draws). -> {"nll", "nll_sentence", "by_position" [T], "elbo", "kl_sentence",
    "ppl", "documents", "sentences", "tokens"}."""
    was_training = chain.training
    chain.eval()
    n_docs = min(limit, len(split)) if limit else len(split)
    batches = [b for b in sorted_batches(split, batch_size)]
    batches = [[i for i in b if i < n_docs] for b in batches]
    totals = {"nll": 0.0, "elbo": 0.0, "kl": 0.0, "sentences": 0, "tokens": 0, "documents": 0}
    by_position, counts = {}, {}
    bar = progress_bar(total=n_docs, unit="doc", disable=not progress, desc="evaluating")
    with forked_rng(chain.device):
        for i, positions in enumerate(b for b in batches if b):
            torch.manual_seed(seed * 1_000_003 + i)
            batch = gather_documents(split, positions)
            previous = torch.zeros(batch.size)
            for t in range(1, batch.steps + 1):
                log_px = iw_log_likelihood(chain, batch.prefix(t), k).cpu()
                inside = batch.sizes >= t
                by_position[t] = by_position.get(t, 0.0) - float((log_px - previous)[inside].sum())
                counts[t] = counts.get(t, 0) + int(inside.sum())
                previous = log_px
            rec, kl = document_terms(chain, batch.to(chain.device))
            totals["nll"] -= float(previous.sum())
            totals["elbo"] += float((rec - kl).sum())
            totals["kl"] += float(kl.sum())
            totals["sentences"] += batch.sentences.size
            totals["tokens"] += batch.num_tokens()
            totals["documents"] += batch.size
            bar.update(batch.size)
    bar.close()
    chain.train(was_training)
    d, s = max(totals["documents"], 1), max(totals["sentences"], 1)
    return {"nll": totals["nll"] / d, "nll_sentence": totals["nll"] / s,
            "by_position": [by_position[t] / counts[t] for t in sorted(by_position)],
            "elbo": totals["elbo"] / d, "kl_sentence": totals["kl"] / s,
            "ppl": math.exp(min(totals["nll"] / max(totals["tokens"], 1), 700.0)),
            "documents": totals["documents"], "sentences": totals["sentences"], "tokens": totals["tokens"],
            "iw_samples": k}


@torch.no_grad()
def document_log_likelihoods(score, documents, batch_size=8, progress=False, desc="scoring"):
    """``score(DocumentBatch) -> log p(x) [D]`` over a list of documents (each a list of id lists), in
    batches: [N]."""
    out = []
    bar = progress_bar(total=len(documents), unit="doc", disable=not progress, desc=desc)
    for start in range(0, len(documents), batch_size):
        out.append(score(make_document_batch(documents[start : start + batch_size])).cpu())
        bar.update(len(documents[start : start + batch_size]))
    bar.close()
    return torch.cat(out) if out else torch.zeros(0)


def cloze_accuracy(score, items, batch_size=8, progress=False):
    """Story Cloze: for each (context [ids...], ending 1, ending 2, answer 1|2), the ending whose
    document (context + ending) ``score`` finds more probable. -> (accuracy, choices [N] of 1|2)."""
    docs = [c + [e] for c, e1, e2, _ in items for e in (e1, e2)]
    log_p = document_log_likelihoods(score, docs, batch_size, progress, "cloze").view(-1, 2)
    choices = (log_p[:, 1] > log_p[:, 0]).long() + 1
    answers = torch.tensor([a for *_, a in items])
    return float((choices == answers).float().mean()) if len(items) else float("nan"), choices.tolist()
