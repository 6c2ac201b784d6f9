"""How much of a sentence its reconstruction keeps: the decoded posterior mean against the input.

Corpus BLEU-4 (sacrebleu, on the tokens as they are), token accuracy (position by position, over
the longer of the two), the fraction of the input's content words that the reconstruction
contains, and exact matches; overall, per sentence and by length bucket."""

import torch
from sacrebleu.metrics import BLEU

from ..data.corpus import decoded_ids, make_batch
from ..devices import forked_rng
from ..models.decoding import Greedy

FUNCTION_WORDS = set("""a an the of to in on at by for with from and or but is are was were be been being it its 's
he she they we i you his her their our my your this that these those as not n't do does did have has had will would
can could should may might said says say than then there here which who whom what when where why how all any some
no more most other such only own same so too very just also about into over after before up down out""".split())
BUCKETS = ((1, 10), (11, 20), (21, 30), (31, None))  # sentence lengths in tokens, inclusive


def content_words(sentence):
    """The words of a sentence that carry its content: a letter in them, neither a function word
    nor <unk> nor N (PTB's number token)."""
    return [w for w in sentence.split()
            if w not in FUNCTION_WORDS and w not in ("<unk>", "N") and any(c.isalpha() for c in w)]


def content_kept(reference, hypothesis):
    """The fraction of ``reference``'s content words found in ``hypothesis``; None if it has none."""
    words = content_words(reference)
    if not words:
        return None
    found = set(hypothesis.split())
    return sum(w in found for w in words) / len(words)


def token_accuracy(reference, hypothesis):
    """Tokens equal at the same position, over the longer sentence's length."""
    ref, hyp = reference.split(), hypothesis.split()
    return sum(a == b for a, b in zip(ref, hyp)) / max(len(ref), len(hyp), 1)


def corpus_bleu(references, hypotheses):
    """Corpus BLEU-4 in [0, 1] (sacrebleu, no retokenization)."""
    if not references:
        return float("nan")
    # force: the tokens are the run's own (PTB-style, "." split off), to be scored as they are
    return BLEU(tokenize="none", force=True).corpus_score(list(hypotheses), [list(references)]).score / 100


def sentence_bleu(reference, hypothesis):
    """BLEU-4 of one sentence in [0, 1] (sacrebleu, effective order for short sentences)."""
    return BLEU(tokenize="none", effective_order=True, force=True).sentence_score(hypothesis, [reference]).score / 100


def scores(references, hypotheses):
    """-> ({"bleu", "token_accuracy", "content_kept", "exact", "sentences", "by_length": {bucket: ...}},
    per-sentence rows {"reconstruction", "bleu", "token_accuracy", "content_kept", "exact"})."""
    rows = [{"reconstruction": h, "bleu": sentence_bleu(r, h), "token_accuracy": token_accuracy(r, h),
             "content_kept": content_kept(r, h), "exact": r.split() == h.split()}
            for r, h in zip(references, hypotheses)]
    totals = _summary(references, hypotheses, rows)
    totals["by_length"] = {}
    for low, high in BUCKETS:
        picked = [i for i, r in enumerate(references) if low <= len(r.split()) and (high is None or len(r.split()) <= high)]
        if picked:
            name = f"{low}-{high}" if high else f"{low}+"
            totals["by_length"][name] = _summary([references[i] for i in picked], [hypotheses[i] for i in picked],
                                                 [rows[i] for i in picked])
    return totals, rows


def _summary(references, hypotheses, rows):
    kept = [r["content_kept"] for r in rows if r["content_kept"] is not None]
    n = max(len(rows), 1)
    return {"bleu": corpus_bleu(references, hypotheses), "token_accuracy": sum(r["token_accuracy"] for r in rows) / n,
            "content_kept": sum(kept) / len(kept) if kept else float("nan"),
            "exact": sum(r["exact"] for r in rows) / n, "sentences": len(rows)}


@torch.inference_mode()
def reconstruct_ids(svae, sentences, strategy=None, batch_size=64, max_len=None):
    """Decode the posterior mean of each sentence (token-id lists). -> token-id lists, the global
    RNG left as it was (validation calls this between training steps)."""
    strategy = strategy or Greedy()
    was_training = svae.training
    svae.eval()
    out = []
    with forked_rng(svae.device):
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start:start + batch_size]
            z = svae.posterior_mean(make_batch(chunk).to(svae.device))
            limit = max_len or (max(len(s) for s in chunk) + 10)
            _, tokens = svae.decode(z, strategy=strategy, max_len=limit)
            out += decoded_ids(tokens)
    svae.train(was_training)
    return out


def first_sentences(split, n, fits=None):
    """The first ``n`` sentences of ``split`` (token-id lists) for which ``fits(ids)`` holds (all if
    None); it reads no further than the n-th."""
    picked = []
    for i in range(len(split)):
        if len(picked) == n:
            break
        sentence = split.sentence(i)
        if fits is None or fits(sentence):
            picked.append(sentence)
    return picked


def validation_sample(split, n=100, max_len=None):
    """The fixed sample that validation reconstructs: the first ``n`` sentences of ``split`` of at
    most ``max_len`` tokens (the lengths trained on), or its first ``n`` if none is that short."""
    picked = first_sentences(split, n, None if max_len is None else (lambda s: len(s) <= max_len))
    return picked or first_sentences(split, n)


def validation_bleu(svae, tokenizer, sentences):
    """Corpus BLEU of the greedy reconstructions of ``sentences`` (lists of ids; validation_sample's:
    the cheap curve that validation writes to metrics.csv)."""
    decoded = reconstruct_ids(svae, sentences, Greedy())
    return corpus_bleu([tokenizer.decode(s) for s in sentences], [tokenizer.decode(s) for s in decoded])
