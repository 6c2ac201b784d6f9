"""Semi-amortized inference (Kim et al. 2018): start from the guide's variational parameters for
each sentence and improve them by SVI steps with the model fixed. The per-sentence parameters are
the encoder summaries h that the guide's head turns into q(z|x), so every family can be refined.
The ELBO gained measures the amortization gap; the refined q is also a better proposal for the
importance-weighted NLL (evaluation.evaluate(refine=N)); evaluation.metrics.refine_proposal fits it further to
the importance-weighted bound itself."""

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from ..data.corpus import gather, sorted_batches
from ..devices import forked_rng
from ..models.networks import frozen


def batch_elbo(svae, batch, h, particles):
    """Mean ELBO per sentence [B] of q(z|x) = head(h), over ``particles`` draws."""
    total = torch.zeros(batch.size, device=svae.device)
    for _ in range(particles):
        guide_tr = poutine.trace(svae.guide_given).get_trace(h)
        model_tr = poutine.trace(poutine.replay(svae.model, trace=guide_tr)).get_trace(batch)
        total = total + model_tr.nodes["x"]["fn"].log_prob(batch.targets) \
            + svae.latent_log_prob(model_tr) - svae.latent_log_prob(guide_tr)
    return total / particles


def refine_summaries(svae, batch, h, steps, lr=0.05, amp="off"):
    """h [B, H] -> h [B, H] after ``steps`` Adam steps on the one-draw ELBO of q(z|x) = head(h),
    each sentence's h on its own (the ELBO is a sum over sentences). The model's parameters must
    be frozen. amp="bf16": the decoder in bfloat16 (the guide stays float32)."""
    h = h.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([h], lr=lr)
    loss = Trace_ELBO()
    device_type = svae.device.type

    def guide(batch):
        with torch.autocast(device_type, enabled=False):
            return svae.guide_given(h)

    with torch.enable_grad(), torch.autocast(device_type, torch.bfloat16, enabled=amp == "bf16"):
        for _ in range(steps):
            optimizer.zero_grad()
            loss.differentiable_loss(svae.model, guide, batch).backward()
            optimizer.step()
    return h.detach()


def refine_batch(svae, batch, steps, lr=0.05, particles=16):
    """-> (ELBO before [B], ELBO after [B]) for ``steps`` Adam steps on each sentence's h."""
    with torch.no_grad():
        h = svae.encoder(batch.targets, batch.lengths)
        before = batch_elbo(svae, batch, h, particles)
    h = refine_summaries(svae, batch, h, steps, lr)
    with torch.no_grad():
        after = batch_elbo(svae, batch, h, particles)
    return before, after


def refine(svae, split, steps, batch_size=64, lr=0.05, particles=16, seed=0, progress=True):
    """Mean ELBO per sentence over ``split`` before and after ``steps`` refinement steps."""
    from ..progress import progress_bar

    svae.eval()
    totals = [0.0, 0.0]
    with frozen(svae), forked_rng(svae.device):
        torch.manual_seed(seed)
        for positions in progress_bar(sorted_batches(split, batch_size), desc="refine", disable=not progress):
            before, after = refine_batch(svae, gather(split, positions).to(svae.device), steps, lr, particles)
            totals[0] += float(before.sum())
            totals[1] += float(after.sum())
    n = len(split)
    return {"steps": steps, "elbo_before": totals[0] / n, "elbo_after": totals[1] / n,
            "gain": (totals[1] - totals[0]) / n}
