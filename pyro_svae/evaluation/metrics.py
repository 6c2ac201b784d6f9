"""Per-sentence ELBO terms and validation metrics (beta = 1, no subsample scaling)."""

import math

import torch
from pyro import poutine

from ..data.corpus import gather, sorted_batches
from ..devices import check_amp, forked_rng
from ..errors import SVAEError
from ..inference.kl import elbo_terms, elbo_traces, latent_kl, latent_traces, terms_of  # noqa: F401 (latent_kl: the API's name)
from ..inference.objectives import floor_shortfall, latent_sites, unit_kls
from ..models.guides import SingleSite


@torch.inference_mode()
def validate(svae, split, batch_size=64, seed=0, iw_samples=0, world=None, free_bits=0.0):
    """Mean ELBO, reconstruction and KL per sentence over ``split``, and the ELBO perplexity bound
    exp(-sum ELBO / tokens), tokens counting </s>. iw_samples = K > 0: also the mean K-sample
    importance-weighted bound "iw" (the ELBO terms then average the same K draws). free_bits:
    also "shortfall", how far the split's KL falls below that floor (``kl_floor``'s units, their
    KL averaged over the split), so that ELBO - shortfall is the bound with the KL counted as
    training counts it. Each batch draws from its own seed, so ``world`` (distributed.World) can
    share the batches among processes and sum their totals: the same numbers as one process.
    Leaves the global RNG as it found it."""
    was_training = svae.training
    svae.eval()
    totals = dict.fromkeys(("rec", "kl", "iw", "tokens", "sentences"), 0.0)
    floor = _FloorTotals(free_bits if svae.z_dim else 0.0)
    with forked_rng(svae.device):
        for i, positions in enumerate(sorted_batches(split, batch_size)):
            if world is not None and i % world.size != world.rank:
                continue
            torch.manual_seed(seed * 1_000_003 + i)
            batch = gather(split, positions).to(svae.device)
            if iw_samples:
                log_px, rec, kl = iw_log_likelihood(svae, batch, iw_samples, chunk=iw_samples)
                totals["iw"] += float(log_px.sum())
                floor.add_batch(svae, batch)
            else:  # the floor's units from the same traces: one pass of the guide
                traces = elbo_traces(svae, batch)
                rec, kl = terms_of(svae, *traces)
                floor.add(*traces)
            totals["rec"] += float(rec.sum())
            totals["kl"] += float(kl.sum())
            totals["tokens"] += batch.num_tokens()
            totals["sentences"] += batch.size
        if world is not None and floor.units is None and len(split):  # no batch here: the others' units, as 0
            batch = gather(split, next(iter(sorted_batches(split, batch_size)))).to(svae.device)
            floor.add_batch(svae, batch, weight=0)
    svae.train(was_training)
    if world is not None:
        summed = world.sum(list(totals.values()) + floor.values(), svae.device)
        totals = dict(zip(totals, summed))
        floor.set(summed[len(totals):])
    n = max(totals["sentences"], 1)
    elbo = totals["rec"] - totals["kl"]
    return {
        "elbo": elbo / n,
        "rec": -totals["rec"] / n,  # reconstruction loss, nats per sentence
        "kl": totals["kl"] / n,
        "ppl_bound": math.exp(min(-elbo / max(totals["tokens"], 1), 700.0)),
        **({"iw": totals["iw"] / n} if iw_samples else {}),
        **({"shortfall": floor.shortfall(n)} if floor.free_bits else {}),
        "sentences": int(totals["sentences"]),
        "tokens": int(totals["tokens"]),
    }


class _FloorTotals:
    """The free-bits floor's units summed over validation batches (``validate``)."""

    def __init__(self, free_bits):
        self.free_bits, self.units, self.pooled, self.pooled_dims = free_bits, None, 0.0, 0

    def add(self, guide_trace, model_trace, weight=1):
        """One batch's units, from its guide trace and a model (or prior) trace replayed on it."""
        if not self.free_bits:
            return
        units, pooled, self.pooled_dims = unit_kls(guide_trace, model_trace)
        units = torch.cat([u.sum(0) for u in units]) * weight if units else torch.zeros(0)
        self.units = units if self.units is None else self.units + units
        self.pooled += weight * float(pooled.sum()) if self.pooled_dims else 0.0

    def add_batch(self, svae, batch, weight=1):
        """``add`` for a batch whose traces were not kept: its guide and prior traced again."""
        if self.free_bits:
            self.add(*latent_traces(svae, batch), weight=weight)

    def values(self):
        return (self.units.tolist() if self.units is not None else []) + [self.pooled]

    def set(self, values):
        if self.units is not None:
            self.units = torch.tensor(values[:-1], dtype=self.units.dtype)
        self.pooled = values[-1]

    def shortfall(self, n):
        """sum over units of max(0, floor - the unit's KL averaged over the n sentences)."""
        units = [self.units / n] if self.units is not None else []
        return float(floor_shortfall(units, torch.tensor(self.pooled / n), self.pooled_dims, self.free_bits))


def iw_log_likelihood(svae, batch, samples=500, chunk=50, amp="off", h=None, widen=1.0):
    """Importance-weighted estimate of log p(x) per sentence with K = ``samples`` draws from
    q(z|x), and the ELBO terms over the same draws: -> (log p(x) [B], rec [B], kl [B]).
    h [B, H]: the guide's per-sentence parameters (default: the encoder's; refine.py improves
    them); widen: a diag q's standard deviations times this. Any proposal gives a valid
    estimate; a closer (or, for a too-narrow q, a wider) one gives a tighter one.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K, while
    rec = mean_k log p(x|z_k) and kl = mean_k [log q(z_k|x) - log p(z_k)], so that
    ELBO = rec - kl <= log p(x) holds for every sentence (Jensen). The draws are folded into the
    batch ``chunk`` at a time (guide and model run on the repeated batch), so memory stays bounded
    and any guide or prior works. The LM's log-likelihood is exact; a point-estimate guide has
    none (NaN). amp="bf16": the decoder's matrix products in bfloat16 (log-softmax, encoder and
    every latent density stay float32)."""
    decoder_precision = lambda: torch.autocast(svae.device.type, torch.bfloat16, enabled=amp == "bf16")  # noqa: E731
    if svae.z_dim == 0:
        with decoder_precision():
            rec, _ = elbo_terms(svae, batch)
        return rec, rec, torch.zeros_like(rec)
    if h is None:
        h = svae.encoder(batch.targets, batch.lengths)
    log_w, log_px_all = [], []
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        repeated = batch.repeat(k)  # sentence-major: row i * k + j is draw j of sentence i
        guide_tr = poutine.trace(svae.guide_given).get_trace(h.repeat_interleave(k, dim=0), widen=widen)
        model_tr = poutine.trace(poutine.replay(svae.model, trace=guide_tr)).get_trace(repeated)
        with decoder_precision():  # the likelihood runs the decoder lazily, here
            log_px = model_tr.nodes["x"]["fn"].log_prob(repeated.targets)
        log_w.append((log_px + svae.latent_log_prob(model_tr) - svae.latent_log_prob(guide_tr)).view(batch.size, k))
        log_px_all.append(log_px.view(batch.size, k))
    log_w, log_px = torch.cat(log_w, dim=1), torch.cat(log_px_all, dim=1)
    rec = log_px.mean(1)
    log_p = torch.logsumexp(log_w, dim=1) - math.log(samples)
    if svae.posterior.point_estimate:
        log_p = torch.full_like(rec, float("nan"))
    return log_p, rec, rec - log_w.mean(1)


def refine_proposal(svae, batch, h, steps, draws=8, lr=0.02, amp="off"):
    """h [B, H] -> h [B, H] after ``steps`` Adam steps on the ``draws``-draw importance-weighted
    bound of q(z|x) = head(h), each sentence's h on its own; the model's parameters must be frozen.
    An ELBO-optimal q is mode-seeking, narrower than the posterior; this fits q as the proposal that
    the IW estimate wants (Burda et al. 2016). The bound's gradient is the reparameterized one, so
    every latent site must have rsample."""
    if svae.posterior.point_estimate:
        raise SVAEError("refining q on the importance-weighted bound needs a guide with a density, not delta")
    with torch.no_grad():
        trace = poutine.trace(svae.guide_given).get_trace(h)
    discrete = [name for name in latent_sites(trace) if not trace.nodes[name]["fn"].has_rsample]
    if discrete:
        raise SVAEError(f"refining q on the importance-weighted bound needs reparameterized latents; "
                        f"{', '.join(discrete)} is discrete")
    h = h.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([h], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            log_px, _, _ = iw_log_likelihood(svae, batch, draws, draws, amp, h)
            (-log_px.sum()).backward()
            optimizer.step()
    return h.detach()


def component_usage(posteriors):
    """How many of a mixture's components the data uses, from each sentence's posterior over them
    [N, K]: the entropy H of their average (nats) and exp(H), the clusters in use (K when all are
    used equally, 1 when every sentence falls in one)."""
    average = posteriors.mean(0)
    entropy = float(-(average * average.clamp(min=1e-30).log()).sum())
    return {"component_entropy": entropy, "clusters_in_use": math.exp(entropy)}


def active_units(means, threshold=0.01):
    """Dimensions whose posterior mean varies across the data with variance >= threshold.
    means: [N, Z] -> (count, variances [Z])."""
    variances = means.var(dim=0, unbiased=False)
    return int((variances >= threshold).sum()), variances


def mutual_information(dists, samples):
    """I(x; z) under the aggregate posterior (He et al. 2019):
    E_x E_q(z|x) [log q(z|x)] - E_z [log q(z)], with q(z) = mean_x q(z|x) over the whole split.
    dists: per-batch q(z|x) (batch shape [B_i]); samples: the matching draws z ~ q(z|x) [B_i, Z]."""
    N = sum(z.shape[0] for z in samples)
    log_q_own = torch.cat([d.log_prob(z) for d, z in zip(dists, samples)])
    log_q_aggregate = []
    for z in samples:
        # log q(z_i | x_j) for every sentence j of the split, then logsumexp over j
        cross = torch.cat([d.log_prob(z.unsqueeze(1).expand(-1, d.batch_shape[0], -1)) for d in dists], dim=1)
        log_q_aggregate.append(torch.logsumexp(cross, dim=1) - math.log(N))
    return float(log_q_own.mean() - torch.cat(log_q_aggregate).mean())


@torch.no_grad()
def evaluate(svae, split, samples=500, batch_size=32, chunk=50, seed=0, progress=True, au_threshold=0.01,
             amp="off", refine=0, refine_lr=0.05, widen=1.0, refine_iw=0, refine_draws=8):
    """Every metric of the literature on one split, beta = 1, no subsample scaling.

    -> {"totals": {...}, "sentences": [{"nll", "elbo", "rec", "kl", "tokens"} per sentence]}.
    Token counts include </s> and exclude <s>; perplexities are exp(total nats / tokens). The
    ELBO, rec and kl use the same K draws as the NLL; kl_analytic is the closed form where one
    exists (else a one-draw estimate). amp="bf16": the decoder in bfloat16 (iw_log_likelihood).
    refine = N > 0: q(z|x) is first refined per sentence by N SVI steps (refine.py) and the NLL,
    ELBO, rec and kl use the refined q; "elbo_amortized" is the guide's own ELBO (16 draws).
    refine_iw = M > 0: then M steps on each sentence's ``refine_draws``-draw importance-weighted
    bound (refine_proposal), which fits q as a proposal: a tighter NLL, a lower ELBO.
    widen != 1: the draws come from a diag q with its standard deviations times ``widen``.
    kl_analytic, MI and active units always describe the amortized guide. With a mixture prior,
    log p(z) is the mixture's (so NLL, ELBO and KL stay exact) and ``component_usage`` is added."""
    from ..progress import progress_bar

    from ..models.networks import frozen
    from ..inference.refine import batch_elbo, refine_summaries

    if not (math.isfinite(widen) and widen > 0):
        raise SVAEError(f"--widen {widen}: must be a positive number")
    if refine_draws < 1:
        raise SVAEError(f"--refine-draws {refine_draws}: must be at least 1")
    check_amp(amp, next(svae.parameters()).device)
    svae.eval()
    rows, means, dists, draws, components = [None] * len(split), [], [], [], []
    mixture = svae.z_dim > 0 and hasattr(svae.prior, "responsibilities")
    # MI needs q(z|x) as one distribution; a point estimate has no meaningful MI
    with_mi = svae.z_dim > 0 and isinstance(svae.posterior, SingleSite) and not svae.posterior.point_estimate
    refine, refine_iw = (refine, refine_iw) if svae.z_dim else (0, 0)
    batches = sorted_batches(split, batch_size)
    with forked_rng(svae.device), frozen(svae):
        torch.manual_seed(seed)
        for positions in progress_bar(batches, desc="evaluate", unit="batch", disable=not progress):
            batch = gather(split, positions).to(svae.device)
            h = svae.encoder(batch.targets, batch.lengths) if svae.z_dim else None
            if refine or refine_iw:
                elbo_amortized = batch_elbo(svae, batch, h, particles=16)
                h = refine_summaries(svae, batch, h, refine, refine_lr, amp)
                h = refine_proposal(svae, batch, h, refine_iw, refine_draws, amp=amp) if refine_iw else h
            log_px, rec, kl = iw_log_likelihood(svae, batch, samples, chunk, amp, h, widen)
            kl_exact = kl
            if svae.z_dim:
                means.append(svae.posterior_mean(batch))
                kl_exact = latent_kl(svae, batch)
                if with_mi:
                    dists.append(svae.q(batch))
                    draws.append(dists[-1].sample())
                if mixture:
                    components.append(svae.component_posterior(batch))
            for i, pos in enumerate(positions):
                rows[pos] = {"nll": -float(log_px[i]), "elbo": float(rec[i] - kl[i]), "rec": -float(rec[i]),
                             "kl": float(kl[i]), "kl_analytic": float(kl_exact[i]), "tokens": int(batch.lengths[i])}
                if refine or refine_iw:
                    rows[pos]["elbo_amortized"] = float(elbo_amortized[i])
    tokens = sum(r["tokens"] for r in rows)
    total = lambda key: sum(r[key] for r in rows)  # noqa: E731
    n = len(rows)
    totals = {
        "sentences": n, "tokens": tokens, "iw_samples": samples if svae.z_dim else 0, "amp": amp,
        "nll": total("nll") / n, "elbo": total("elbo") / n, "rec": total("rec") / n, "kl": total("kl") / n,
        "kl_analytic": total("kl_analytic") / n,
        "ppl_iw": math.exp(total("nll") / tokens), "ppl_elbo": math.exp(-total("elbo") / tokens),
    }
    if refine or refine_iw:
        totals.update(refine_steps=refine, elbo_amortized=total("elbo_amortized") / n)
    if refine_iw:
        totals.update(refine_iw_steps=refine_iw, refine_draws=refine_draws)
    if widen != 1.0 and svae.z_dim:
        totals["widen"] = widen
    if svae.z_dim:
        totals["active_units"], variances = active_units(torch.cat(means), au_threshold)
        totals["mutual_information"] = mutual_information(dists, draws) if with_mi else None
        totals["au_variances"] = [round(float(v), 5) for v in variances]
    if mixture:
        totals.update(component_usage(torch.cat(components)))
    return {"totals": totals, "sentences": rows}
