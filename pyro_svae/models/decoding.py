"""Batched decoding from z: greedy, ancestral sampling (temperature, top-k), and beam search.

Each search takes the decoder, z [B, Z] and a maximum length, runs one decoder step per time
step for the whole batch, and returns tokens [B, L] (w1..wn </s> then <pad>; a sentence that
never emits </s> is cut at ``max_len``). With ``unk=False`` a search never emits <unk> (for display:
the likeliest real word takes its place).

A beam search with ``rerank`` chooses among its ``width`` candidates x' the one that best
explains z both ways: log p(x'|z) + log q(z|x'), over length ** length_penalty. The model binds
``log_q`` (``bind_rerank``); a generic candidate that the decoder likes but whose posterior lies
elsewhere loses to one that the encoder maps back near z."""

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..data.tokenizers import BOS, EOS, PAD, UNK
from ..errors import SVAEError


def _forbid_specials(logits, unk=True):
    logits[..., PAD] = -float("inf")
    logits[..., BOS] = -float("inf")
    if not unk:
        logits[..., UNK] = -float("inf")
    return logits


def _run(decoder, z, max_len, pick, batch_size, unk=True):
    state = decoder.initial_state(z) if z is not None else None
    device = decoder.out.weight.device
    tokens = torch.full((batch_size,), BOS, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    out = []
    for _ in range(max_len):
        logits, state = decoder.step(tokens, z, state)
        tokens = pick(_forbid_specials(logits.float(), unk)).masked_fill(done, PAD)
        out.append(tokens)
        done = done | (tokens == EOS)
        if bool(done.all()):
            break
    return torch.stack(out, dim=1)


@dataclasses.dataclass
class Greedy:
    unk: bool = True

    def __call__(self, decoder, z, max_len, batch_size):
        return _run(decoder, z, max_len, lambda logits: logits.argmax(-1), batch_size, self.unk)


@dataclasses.dataclass
class Sampling:
    temperature: float = 1.0
    top_k: int = 0  # 0: the whole vocabulary
    unk: bool = True

    def __call__(self, decoder, z, max_len, batch_size):
        def pick(logits):
            logits = logits / self.temperature
            if self.top_k:
                kth = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            return torch.distributions.Categorical(logits=logits).sample()

        return _run(decoder, z, max_len, pick, batch_size, self.unk)


RERANK_CHUNK = 1024  # candidates encoded at once by a reranking beam: memory flat in batch * width


@dataclasses.dataclass
class Beam:
    """Beam search; the final choice ranks by total log-probability / length ** length_penalty, plus
    log q(z|x') with ``rerank`` (``log_q``: candidates [N, L], z [N, Z] -> [N], bound by the model)."""

    width: int = 5
    length_penalty: float = 1.0
    unk: bool = True
    rerank: bool = False
    log_q: object = None

    def __call__(self, decoder, z, max_len, batch_size):
        if not self.rerank:
            return beam_search(decoder, z, max_len, batch_size, self.width, self.length_penalty, unk=self.unk)[0]
        if self.log_q is None or z is None:
            raise SVAEError("--rerank: this model has no q(z|x) to rerank with")
        history, scores, lengths = beams(decoder, z, max_len, batch_size, self.width, unk=self.unk)
        B, W, L = history.shape
        flat, zz = history.reshape(B * W, L), z.repeat_interleave(W, dim=0)
        log_q = torch.cat([self.log_q(flat[i : i + RERANK_CHUNK], zz[i : i + RERANK_CHUNK])
                           for i in range(0, B * W, RERANK_CHUNK)]).view(B, W)
        best = _best(scores + log_q.to(scores.dtype), lengths, self.length_penalty)
        return history[torch.arange(B, device=history.device), best]


def bind_rerank(strategy, make_log_q):
    """``strategy`` with the model's log q bound: ``make_log_q()`` -> Beam.log_q, called only for a
    reranking beam (it raises where the model has none)."""
    if isinstance(strategy, Beam) and strategy.rerank:
        return dataclasses.replace(strategy, log_q=make_log_q())
    return strategy


def _best(scores, lengths, length_penalty):
    """The index [B] of each row's best candidate by score / length ** length_penalty."""
    return (scores / lengths.clamp(min=1) ** length_penalty).argmax(dim=1)


def beam_search(decoder, z, max_len, batch_size, width, length_penalty=1.0, start=None, allow_eos=True, unk=True):
    """-> best tokens [B, L] and their total log-probabilities [B].

    start: optional (state, tokens [B]) to continue from, e.g. after a forced prefix (see
    ``prefix_start``); allow_eos=False makes every sentence exactly ``max_len`` tokens long."""
    history, scores, lengths = beams(decoder, z, max_len, batch_size, width, start, allow_eos, unk)
    best = _best(scores, lengths, length_penalty)
    pick = torch.arange(batch_size, device=history.device)
    return history[pick, best], scores[pick, best]


def beams(decoder, z, max_len, batch_size, width, start=None, allow_eos=True, unk=True):
    """Every candidate of a beam search: -> tokens [B, W, L], total log-probabilities [B, W]
    (-inf for a slot no hypothesis filled) and lengths [B, W] (</s> counted); options as beam_search's."""
    B, W = batch_size, width
    device = decoder.out.weight.device
    zz = z.repeat_interleave(W, dim=0) if z is not None else None
    if start is None:
        state = decoder.initial_state(zz) if zz is not None else None
        tokens = torch.full((B * W,), BOS, dtype=torch.long, device=device)
    else:
        state, first = start
        state = tuple(s.repeat_interleave(W, dim=1) for s in state) if state is not None else None
        tokens = first.repeat_interleave(W, dim=0)
    scores = torch.full((B, W), -float("inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one
    finished = torch.zeros(B, W, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, W, device=device)
    history = torch.zeros(B, W, 0, dtype=torch.long, device=device)
    for t in range(max_len):
        logits, state = decoder.step(tokens, zz, state)
        logits = _forbid_specials(logits.float(), unk)
        if not allow_eos:
            logits[..., EOS] = -float("inf")
        logp = F.log_softmax(logits, dim=-1).view(B, W, -1)
        V = logp.shape[-1]
        pad_only = torch.full_like(logp[0, 0], -float("inf"))
        pad_only[PAD] = 0.0  # a finished beam continues with <pad> at no cost
        logp = torch.where(finished.unsqueeze(-1), pad_only, logp)
        top, flat = (scores.unsqueeze(-1) + logp).view(B, W * V).topk(W, dim=-1)
        beam, tok = flat // V, flat % V
        scores = top
        history = torch.cat([history.gather(1, beam.unsqueeze(-1).expand(-1, -1, t)),
                             tok.unsqueeze(-1)], dim=-1)
        was_finished = finished.gather(1, beam)
        lengths = lengths.gather(1, beam) + (~was_finished).float()
        finished = was_finished | (tok == EOS)
        rows = (beam + torch.arange(B, device=device).unsqueeze(1) * W).view(-1)
        state = tuple(s[:, rows] for s in state) if state is not None else None
        tokens = tok.view(-1)
        if bool(finished.all()):
            break
    return history, scores, lengths


def prefix_start(decoder, z, prefixes):
    """Force the decoder through equal-length prefixes [B, P] (words only): -> (state, next input
    tokens [B]) from which a search continues the sentences."""
    B = prefixes.shape[0]
    state = decoder.initial_state(z) if z is not None else None
    bos = torch.full((B, 1), BOS, dtype=torch.long, device=prefixes.device)
    inputs = torch.cat([bos, prefixes], dim=1)
    if inputs.shape[1] > 1:
        _, state = decoder(inputs[:, :-1], z, state)
    return state, inputs[:, -1]


def make_strategy(strategy="greedy", beam=5, temperature=1.0, top_k=0, length_penalty=1.0, unk=True, rerank=False):
    """The search named ``strategy`` with its options checked (a one-line SVAEError for a bad one)."""
    if rerank and strategy != "beam":
        raise SVAEError(f"--rerank chooses among a beam's candidates: it goes with --decode beam, not {strategy}")
    if strategy == "greedy":
        return Greedy(unk)
    if strategy == "sample":
        if not (math.isfinite(temperature) and temperature > 0):
            raise SVAEError(f"--temperature {temperature}: must be a positive number")
        if top_k < 0:
            raise SVAEError(f"--top-k {top_k}: must be >= 0 (0: all words)")
        return Sampling(temperature, top_k, unk)
    if strategy == "beam":
        if beam < 1:
            raise SVAEError(f"--beam {beam}: must be at least 1")
        if not math.isfinite(length_penalty):
            raise SVAEError(f"--length-penalty {length_penalty}: must be a finite number")
        return Beam(beam, length_penalty, unk, rerank)
    raise SVAEError(f"unknown decoding {strategy!r}; use greedy, sample or beam")
