"""Bowman et al.'s imputation experiment: remove the end of each sentence and complete it.

The VAE completes by iterated conditional modes (ICM), coordinate ascent on log p(x, z) over the
missing words and z: start from z = E_q[z | prefix]; the x-step beam-searches the missing words
with the decoder forced through the prefix; the z-step re-encodes the completed sentence and
climbs log p(x, z) by gradient steps. Each step keeps the better of the old and new values, so
log p(x, z) never decreases. The language model completes by beam search after the prefix."""

import collections

import torch
from pyro import poutine

from ..data.corpus import make_batch
from ..models.decoding import beam_search, prefix_start
from ..models.networks import frozen


def split_ending(ids, fraction=0.2):
    """-> (prefix, ending): the last ``fraction`` of the words, at least one, is the ending."""
    m = max(1, round(fraction * len(ids)))
    return ids[: len(ids) - m], ids[len(ids) - m :]


def complete(decoder, z, prefixes, m, beam):
    """Beam-search exactly m words after each prefix [B, P] -> endings [B, m]."""
    start = prefix_start(decoder, z, prefixes)
    return beam_search(decoder, z, m, prefixes.shape[0], beam, length_penalty=0.0, start=start, allow_eos=False)[0]


def joint_log_prob(svae, batch, z):
    """log p(x, z) per sentence [B] (the model conditioned on z, x observed)."""
    trace = poutine.trace(poutine.condition(svae.model, data=svae.prior.split(z))).get_trace(batch)
    return trace.nodes["x"]["fn"].log_prob(batch.targets) + svae.latent_log_prob(trace)


def _sentences(prefixes, endings):
    return make_batch(torch.cat([prefixes, endings], dim=1).tolist())


def _climb_z(svae, batch, z, steps, lr):
    """Gradient ascent on log p(x, z) from z; -> the best z seen [B, Z] and its score [B]."""
    z = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    best_z, best = z.detach().clone(), joint_log_prob(svae, batch, z).detach()
    for _ in range(steps):
        optimizer.zero_grad()
        score = joint_log_prob(svae, batch, z)
        (-score.sum()).backward()
        optimizer.step()
        with torch.no_grad():
            score = joint_log_prob(svae, batch, z)
            better = score > best
            best_z[better], best[better] = z[better], score[better]
    return best_z, best


def icm(svae, prefixes, m, beam=15, iterations=3, z_steps=20, lr=0.05):
    """Complete prefixes [B, P] with m words each. -> endings [B, m], z [B, Z], and log p(x, z)
    after the start and after each iteration [iterations + 1, B] (non-decreasing)."""
    device = svae.device
    with torch.no_grad():
        z = svae.posterior_mean(make_batch(prefixes.tolist()).to(device))
        endings = complete(svae.decoder, z, prefixes, m, beam)
        score = joint_log_prob(svae, _sentences(prefixes, endings).to(device), z)
    history = [score]
    for _ in range(iterations):
        batch = _sentences(prefixes, endings).to(device)
        with torch.no_grad():
            z_start = svae.posterior_mean(batch)
        z_new, new = _climb_z(svae, batch, z_start, z_steps, lr)
        better = new > score
        z, score = torch.where(better.unsqueeze(1), z_new, z), torch.where(better, new, score)
        with torch.no_grad():
            candidate = complete(svae.decoder, z, prefixes, m, beam)
            new = joint_log_prob(svae, _sentences(prefixes, candidate).to(device), z)
            better = new > score
            endings = torch.where(better.unsqueeze(1), candidate, endings)
            score = torch.where(better, new, score)
        history.append(score)
    return endings, z, torch.stack(history)


def groups(sentences, fraction):
    """Sentence indices grouped by (prefix length, ending length), so each group is one batch."""
    by_shape = collections.defaultdict(list)
    for i, ids in enumerate(sentences):
        prefix, ending = split_ending(ids, fraction)
        by_shape[(len(prefix), len(ending))].append(i)
    return by_shape


def impute(sentences, vae=None, lm=None, fraction=0.2, beam=15, iterations=3, batch_size=64, progress=True):
    """Complete each sentence (token-id lists) with the VAE (ICM) and/or the LM (beam search).
    -> per sentence {"prefix", "truth", "vae", "lm"} as token-id lists (None where not run)."""
    from ..progress import progress_bar

    results = [None] * len(sentences)
    for m in (vae, lm):
        if m is not None:
            m.eval()
    work = [(shape, idx[i : i + batch_size]) for shape, idx in groups(sentences, fraction).items()
            for i in range(0, len(idx), batch_size)]
    with frozen(vae, lm):
        for (p_len, m_len), idx in progress_bar(work, desc="impute", unit="batch", disable=not progress):
            prefixes = torch.tensor([sentences[i][:p_len] for i in idx], dtype=torch.long).view(len(idx), p_len)
            out = {}
            if vae is not None:
                out["vae"] = icm(vae, prefixes.to(vae.device), m_len, beam, iterations)[0].tolist()
            if lm is not None:
                with torch.no_grad():
                    out["lm"] = complete(lm.decoder, None, prefixes.to(lm.device), m_len, beam).tolist()
            for row, i in enumerate(idx):
                results[i] = {"prefix": sentences[i][:p_len], "truth": sentences[i][p_len:],
                              "vae": out["vae"][row] if "vae" in out else None,
                              "lm": out["lm"][row] if "lm" in out else None}
    return results


def experiment(sentences, vae, lm, tokenizer, fraction=0.2, beam=15, iterations=3, batch_size=64, seed=0,
               progress=True):
    """Bowman's imputation experiment: complete the last ``fraction`` of each sentence (token ids)
    with the VAE (ICM) and/or the language model, then score each with adversarial classifiers.
    -> (rows of {"prefix", "truth", "vae", "lm"} as text, {"vae"|"lm": classifier report})."""
    from .adversarial import adversarial_errors

    torch.manual_seed(seed)
    results = impute(sentences, vae, lm, fraction, beam, iterations, batch_size, progress)
    report = {}
    for model in ("vae", "lm"):
        if results and results[0][model] is not None:
            fake = [r["prefix"] + r[model] for r in results]
            report[model] = adversarial_errors(sentences, fake, len(tokenizer), seed)
    text = lambda ids: tokenizer.decode(ids) if ids is not None else None  # noqa: E731
    return [{k: text(v) for k, v in r.items()} for r in results], report
