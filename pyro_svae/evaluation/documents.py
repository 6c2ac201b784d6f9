"""Evaluating the document model (models/documents.py): its ELBO, the importance-weighted NLL of
each document, the NLL of each sentence given the document's earlier sentences, and the Story
Cloze choice between two endings. Nats; a sentence's tokens count its </s>."""

import math

import torch
from pyro import poutine

from ..data.corpus import make_batch, sorted_batches
from ..data.documents import gather_documents, join_sentences, make_document_batch
from ..devices import forked_rng
from ..models.likelihood import token_nll
from ..progress import progress_bar
from .metrics import iw_log_likelihood as sentence_iw


def per_document(values, batch):
    """Per-sentence values [S] (or [S, ...]) summed per document: [D]."""
    T = max(batch.steps, 1)
    document = (batch.slots // T).to(values.device)
    return values.new_zeros((batch.size,) + values.shape[1:]).index_add(0, document, values)


def document_terms(chain, batch, params=None):
    """One draw z ~ q(z | x) per document: (log p(x | z) [D], log q(z) - log p(z) [D]). ``params``:
    the guide's per-document parameters (ChainVAE.local_params), refined, instead of the encoder's."""
    guide_tr = poutine.trace(chain.guide).get_trace(batch, params=params)
    model_tr = poutine.trace(poutine.replay(chain.model, trace=guide_tr)).get_trace(batch)
    x = model_tr.nodes["x"]
    rec = per_document(x["fn"].log_prob(x["value"]), batch)
    z = guide_tr.nodes["z"]
    return rec, z["fn"].log_prob(z["value"]) - model_tr.nodes["z"]["fn"].log_prob(z["value"])


def log_weights(chain, batch, k, chunk=50):
    """log p(x, z_k) - log q(z_k | x) for k draws per document: [D, k] (draws ``chunk`` at a time;
    the encoder runs once, its per-document parameters repeated for the draws)."""
    batch = batch.to(chain.device)
    params = chain.local_params(batch)
    parts = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        repeated = {name: v.repeat_interleave(n, dim=0) for name, v in params.items()}
        rec, kl = document_terms(chain, batch.repeat(n), repeated)
        parts.append((rec - kl).view(batch.size, n))
    return torch.cat(parts, dim=1)


def iw_log_likelihood(chain, batch, k, chunk=50):
    """The K-sample importance-weighted estimate of log p(x) per document [D]."""
    w = log_weights(chain, batch, k, chunk)
    return torch.logsumexp(w, dim=1) - math.log(k)


def refined_elbo(chain, batch, steps=50, lr=0.02, draws=20, per_step=4):
    """The amortization gap's two ends for a DocumentBatch: the mean ELBO per document [D] (over
    ``draws`` draws) of the encoder's q, and of q with its per-document parameters refined by ``steps``
    Adam steps on that document's ELBO (``per_step`` draws a step; the networks fixed).
    -> (amortized [D], refined [D])."""
    batch = batch.to(chain.device)
    repeated = batch.repeat(per_step)
    with torch.no_grad():
        start = chain.local_params(batch)
    raw = {k: (v.log() if k == "scale" else v).detach().clone().requires_grad_() for k, v in start.items()}
    params = lambda k=1: {n: (v.exp() if n == "scale" else v).repeat_interleave(k, dim=0)  # noqa: E731
                          for n, v in raw.items()}
    optim = torch.optim.Adam(list(raw.values()), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optim.zero_grad()
            rec, kl = document_terms(chain, repeated, params(per_step))
            (kl - rec).sum().backward()
            optim.step()
    chain.zero_grad(set_to_none=True)
    with torch.no_grad():
        mean = lambda p: torch.stack([(lambda r, k: r - k)(*document_terms(chain, batch, p))  # noqa: E731
                                      for _ in range(draws)]).mean(0)
        return mean(start), mean(params())


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


def chain_positions(chain, k=100):
    """log p(x_t | x_<t) of the chain model per slot [D, T] (0 off the mask): differences of IW
    estimates (K = ``k``) of log p(x_1..t) on each prefix, which sum to the document's estimate."""
    def score(batch):
        out, previous = torch.zeros(batch.size, batch.steps), torch.zeros(batch.size)
        for t in range(1, batch.steps + 1):
            log_px = iw_log_likelihood(chain, batch.prefix(t), k).cpu()
            out[:, t - 1] = torch.where(batch.sizes >= t, log_px - previous, torch.zeros(()))
            previous = log_px
        return out
    return score


def sentence_positions(svae, k=100):
    """The same for a sentence VAE (no chain: each sentence's IW estimate alone) or a sentence LM."""
    def score(batch):
        log_px = sentence_iw(svae, batch.sentences.to(svae.device), k, chunk=min(k, 50))[0].cpu()
        return log_px.new_zeros(batch.size * batch.steps).index_copy(0, batch.slots, log_px).view(batch.size, -1)
    return score


def concatenated_positions(lm):
    """The same, exact, for the language model of whole documents (its sentences joined by </s>):
    each sentence's tokens and the </s> after it."""
    def score(batch):
        docs = batch.documents()
        joined = make_batch([join_sentences(d) for d in docs]).to(lm.device)
        logits, _ = lm.decoder(joined.inputs, None)
        log_p = -token_nll(logits, joined.targets).cpu()  # [D, L]
        out = torch.zeros(batch.size, batch.steps)
        for i, d in enumerate(docs):
            start = 0
            for t, sentence in enumerate(d):
                out[i, t] = log_p[i, start : start + len(sentence) + 1].sum()
                start += len(sentence) + 1
        return out
    return score


@torch.no_grad()
def evaluate_documents(positions, split, batch_size=8, seed=0, progress=False, chain=None, device="cpu"):
    """Over a DocumentSplit: the NLL of each document and of each sentence given the earlier ones,
    from ``positions(DocumentBatch) -> log p(x_t | x_<t) [D, T]`` (chain_positions,
    sentence_positions or concatenated_positions); with ``chain``, also its ELBO and KL (one draw).
    -> {"nll" (per document), "nll_sentence", "by_position" [T] (mean NLL of the t-th sentences),
    "ppl", "elbo", "kl_sentence", "documents", "sentences", "tokens"}. ``device``: the model's (its
    RNG is seeded per batch and left as it was found)."""
    totals = {"nll": 0.0, "elbo": 0.0, "kl": 0.0, "sentences": 0, "tokens": 0, "documents": 0}
    by_position, counts = {}, {}
    bar = progress_bar(total=len(split), unit="doc", disable=not progress, desc="evaluating")
    with forked_rng(device):
        for i, positions_ in enumerate(sorted_batches(split, batch_size)):
            torch.manual_seed(seed * 1_000_003 + i)
            batch = gather_documents(split, positions_)
            log_p = positions(batch)
            for t in range(batch.steps):
                inside = batch.sizes > t
                by_position[t] = by_position.get(t, 0.0) - float(log_p[inside, t].sum())
                counts[t] = counts.get(t, 0) + int(inside.sum())
            totals["nll"] -= float(log_p.sum())
            if chain is not None:
                rec, kl = document_terms(chain, batch.to(chain.device))
                totals["elbo"] += float((rec - kl).sum())
                totals["kl"] += float(kl.sum())
            totals["sentences"] += batch.sentences.size
            totals["tokens"] += batch.num_tokens()
            totals["documents"] += batch.size
            bar.update(batch.size)
    bar.close()
    d, s = max(totals["documents"], 1), max(totals["sentences"], 1)
    out = {"nll": totals["nll"] / d, "nll_sentence": totals["nll"] / s,
           "by_position": [by_position[t] / counts[t] for t in sorted(by_position)],
           "ppl": math.exp(min(totals["nll"] / max(totals["tokens"], 1), 700.0)),
           "documents": totals["documents"], "sentences": totals["sentences"], "tokens": totals["tokens"]}
    if chain is not None:
        out.update(elbo=totals["elbo"] / d, kl_sentence=totals["kl"] / s)
    return out


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


def chain_score(chain, k=100):
    """log p(x) of each document of a DocumentBatch by the chain model (IW, K = ``k``): [D]."""
    return lambda batch: iw_log_likelihood(chain, batch, k)


def summed_score(positions):
    """log p(x) of each document as the sum of its sentences' ``positions``: [D]."""
    return lambda batch: positions(batch).sum(1)


def cloze_accuracy(score, items, batch_size=8, progress=False):
    """Story Cloze: for each (context [ids...], ending 1, ending 2, answer 1|2), the ending whose
    document (context + ending) ``score(DocumentBatch) -> log p(x) [D]`` finds the more probable
    (the context's probability is the same for both). -> (accuracy, choices [N] of 1|2,
    log p(context + ending) [N, 2])."""
    docs = [c + [e] for c, e1, e2, _ in items for e in (e1, e2)]
    log_p = document_log_likelihoods(score, docs, batch_size, progress, "cloze").view(-1, 2)
    choices = (log_p[:, 1] > log_p[:, 0]).long() + 1
    answers = torch.tensor([a for *_, a in items])
    accuracy = float((choices == answers).float().mean()) if len(items) else float("nan")
    return accuracy, choices.tolist(), log_p
