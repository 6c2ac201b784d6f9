"""Speed of a training step: ours (the step ``train`` takes: Pyro SVI with the package's ELBO,
replayed from its trace, ``--compile step``, CUDA's default; and the same step eager, the CPU's
default) against a hand-written PyTorch step, Pyro's stock SVI step and a naive Pyro formulation, on the
same batches and the same nn.Modules, in one process.

    python bench/speed.py --data ../shared/data/ptb                  # Bowman's size on PTB batches
    python bench/speed.py --data ../shared/data/ptb --preset tiny    # tiny, bowman or 650; or several: tiny,bowman,650
    python bench/speed.py --batch-size 256 --device cuda

Prints ms/step, tokens/s (real tokens, no padding), the ratios, peak memory, and the share of the
machine's measured matrix-product FLOP/s that each step achieves; then evaluation speed (IW-NLL
with K samples folded into the batch) and batched beam search, in sentences/s."""

import argparse
import math
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from pyro.optim import ClippedAdam  # noqa: E402

from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae.data.corpus import batch_order, encode_sentences, gather, read_sentences, split_files  # noqa: E402
from pyro_svae.models.decoding import Beam  # noqa: E402
from pyro_svae.devices import cpu_name, resolve_device  # noqa: E402
from pyro_svae.inference.objectives import ReparamELBO  # noqa: E402
from pyro_svae.training.step import DeviceSVI, TracedLoss, compile_networks  # noqa: E402
from pyro_svae.evaluation.metrics import iw_log_likelihood  # noqa: E402
from pyro_svae.models.likelihood import token_nll  # noqa: E402
from pyro_svae.models.vae import ModelConfig, SentenceVAE  # noqa: E402
from pyro_svae.models.networks import word_dropout  # noqa: E402
from pyro_svae.data.tokenizers import WordTokenizer  # noqa: E402
from pyro_svae.training.optim import GlobalClipAdam, make_adam  # noqa: E402


DEFAULT_THREADS = torch.get_num_threads()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device, n=2048, repeats=10):
    """Measured float32 matrix-product FLOP/s (the best of ``repeats``)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = math.inf
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(c, batch):
    """Matrix-product FLOPs of one training step (forward x 3 for forward + backward)."""
    tokens = batch.targets.numel()  # padded positions are computed too
    lstm = lambda inp, h: 2 * 4 * h * (inp + h)  # noqa: E731  per token, one layer
    forward = tokens * (lstm(c.emb_dim, c.hidden) + 2 * c.hidden * c.vocab_size)  # decoder + output
    forward += tokens * lstm(c.emb_dim, c.hidden)  # encoder
    return 3 * forward


def naive_model(svae, batch, size, beta=1.0, word_keep=1.0):
    """The same model with the likelihood as a normalized Categorical over [B, T, V]."""
    pyro.module("decoder", svae.decoder)
    with pyro.plate("sentences", size, subsample=torch.arange(batch.size)):
        pyro.module("prior", svae.prior)
        with poutine.scale(scale=beta):
            z = svae.prior.sample(batch.size, svae.device)
        logits, _ = svae.decoder(word_dropout(batch.inputs, word_keep), z)
        pyro.sample("x", dist.Categorical(logits=logits).mask(batch.mask).to_event(1), obs=batch.targets)


class PlainStep:
    """A reparameterized ELBO step written by hand: the same modules and KL estimate. The token
    likelihood is ``F.cross_entropy`` (what a PyTorch user writes) or, with ``ours=True``, our
    ``token_nll`` kernel, so that ours vs this step isolates what Pyro itself costs."""

    def __init__(self, svae, lr, clip, ours=False):
        self.svae, self.clip, self.ours = svae, clip, ours
        self.optim = make_adam(list(svae.parameters()), lr)  # the same fused Adam as ours

    def __call__(self, batch, size, beta, word_keep):
        svae = self.svae
        self.optim.zero_grad(set_to_none=True)
        q = svae.posterior(svae.encoder(batch.targets, batch.lengths))
        z = q.rsample()
        logits, _ = svae.decoder(word_dropout(batch.inputs, word_keep), z)
        if self.ours:
            rec = -token_nll(logits, batch.targets).sum()
        else:
            rec = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1),
                                   ignore_index=0, reduction="sum")
        log_p = dist.Normal(0.0, 1.0).log_prob(z).sum()
        loss = -(size / batch.size) * (rec + beta * (log_p - q.log_prob(z).sum()))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(svae.parameters(), self.clip)
        self.optim.step()
        return loss.detach()  # read with the round's others: no synchronization per step


def autocast(device, run):
    def wrapped(b):
        with torch.autocast(device.type, torch.bfloat16):
            return run(b)
    return wrapped


def profile_step(run, batches, device, rows=14):
    """torch.profiler over a few steps: the operations by their own time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for b in batches[:3]:
            run(b)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40))


PRESETS = {  # model sizes and timing plan; flags given on the command line win
    "tiny": dict(vocab_size=200, emb_dim=16, hidden=16, z_dim=4, batch_size=32, steps=40, rounds=10, threads=1),
    "bowman": dict(vocab_size=10000, emb_dim=353, hidden=191, z_dim=13, batch_size=32, steps=10, rounds=10),
    "650": dict(vocab_size=10000, emb_dim=650, hidden=650, z_dim=32, batch_size=64, steps=5, rounds=3),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--data", default="data/ptb", help="corpus the batches come from (a train --data folder or file)")
    parser.add_argument("--preset", default="", help="tiny, bowman or 650 (sizes and timing plan), or several, comma-separated")
    parser.add_argument("--vocab-size", type=int, default=10000, help="word vocabulary size, specials included")
    parser.add_argument("--emb-dim", type=int, default=353, help="word embedding size (Bowman's 353)")
    parser.add_argument("--hidden", type=int, default=191, help="LSTM size of encoder and decoder (Bowman's 191)")
    parser.add_argument("--z-dim", type=int, default=13, help="latent size (Bowman's 13)")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per training step")
    parser.add_argument("--length", type=int, default=22, help="only batches of sentences of about this length")
    parser.add_argument("--steps", type=int, default=10, help="steps per round and variant")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds of --steps steps per variant, each starting from the next variant; medians reported")
    parser.add_argument("--iw-samples", type=int, default=500, help="K of the timed IW-NLL evaluation")
    parser.add_argument("--iw-chunk", type=int, default=50, help="draws folded into the batch at a time")
    parser.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16 autocast for every variant")
    parser.add_argument("--compile", default="off", choices=["off", "decoder"],
                        help="decoder: train --compile decoder for every variant (they share the networks; ours "
                             "then runs eager, as train does); off: ours is the traced step (--compile step)")
    parser.add_argument("--beam", type=int, default=5, help="beam width of the timed beam search")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the default)")
    parser.add_argument("--profile", action="store_true", help="also print the operations that take one step's time")
    parser.add_argument("--no-eval", action="store_true", help="time the training steps only (implied by --preset)")
    parser.add_argument("--validation", action="store_true",
                        help="keep Pyro's and torch's distribution validation on (train turns it off, as here by default)")
    args = parser.parse_args()
    given = {a.split("=")[0][2:].replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
    plans = []
    for name in [p for p in args.preset.split(",") if p] or [""]:
        if name and name not in PRESETS:
            parser.error(f"--preset {name}: one of {', '.join(PRESETS)}")
        plan = argparse.Namespace(**vars(args))
        plan.preset = name or "custom"
        for k, v in PRESETS.get(name, {}).items():
            if k not in given:
                setattr(plan, k, v)
        plan.no_eval = args.no_eval or bool(name)
        plans.append(plan)
    return plans


def main():
    plans = parse_args()
    summary = [measure(plan) for plan in plans]
    if len(summary) > 1:
        print(f"\n{'preset':<8} {'ours ms':>8} {'plain ms':>9} {'Pyro cost':>10} {'eager':>7} {'stock SVI':>10} {'naive':>7}")
        for name, ms in summary:
            same = ms["plain, our likelihood"]
            print(f"{name:<8} {ms['ours (--compile step)']:>8.2f} {same:>9.2f} {ms['ours (--compile step)'] / same:>9.3f}x "
                  f"{ms['ours, eager (CPU default)'] / same:>6.3f}x {ms['Pyro SVI, Trace_ELBO'] / same:>9.3f}x "
                  f"{ms['naive Pyro (Categorical)'] / same:>6.3f}x")


def measure(args):
    """Time every variant at one size; print the table. -> (preset name, {variant: ms per step})."""
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads or DEFAULT_THREADS)  # a preset's count does not carry to the next
    pyro.enable_validation(args.validation)  # for every variant alike, as Trainer does for its steps
    pyro.clear_param_store()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    sentences, _ = read_sentences(split_files(args.data)["train"])
    tokenizer = WordTokenizer.build(sentences, max_size=args.vocab_size)
    train, _ = encode_sentences(sentences, tokenizer, max_len=100)
    # batches from the length-bucketed training order, keeping those around the requested length
    batches = [gather(train, b) for b in batch_order(train, args.batch_size, seed=0, epoch=0)]
    batches = [b.to(device) for b in batches if abs(b.targets.shape[1] - (args.length + 1)) <= 1
               and b.size == args.batch_size][: args.steps]
    c = ModelConfig(vocab_size=len(tokenizer), emb_dim=args.emb_dim, hidden=args.hidden, z_dim=args.z_dim)
    svae = SentenceVAE(c).to(device).train()
    compile_networks(svae, args.compile)
    size, beta, keep = len(train), 0.5, 0.75

    elbo = ReparamELBO()
    traces = args.amp == "off" and args.compile == "off"  # as train: --compile step in float32, else eager
    ours = DeviceSVI(svae.model, svae.guide, GlobalClipAdam(1e-3, 5.0), elbo,  # Trainer's step, --compile step (CUDA's default)
                     traced=TracedLoss(lambda b, **kw: elbo.differentiable_loss(svae.model, svae.guide, b, **kw), svae)
                     if traces else None)
    eager = DeviceSVI(svae.model, svae.guide, GlobalClipAdam(1e-3, 5.0), elbo)  # the same, --compile off (the CPU's)
    stock_svi = SVI(svae.model, svae.guide, GlobalClipAdam(1e-3, 5.0), Trace_ELBO())
    naive_fn = lambda b, size, beta, word_keep: naive_model(svae, b, size, beta, word_keep)  # noqa: E731
    naive = SVI(naive_fn, svae.guide, GlobalClipAdam(1e-3, 5.0), Trace_ELBO())
    stock = SVI(naive_fn, svae.guide, ClippedAdam({"lr": 1e-3, "clip_norm": 5.0}), Trace_ELBO())
    plain = PlainStep(svae, 1e-3, 5.0)
    plain_ours = PlainStep(svae, 1e-3, 5.0, ours=True)
    variants = {"ours (--compile step)": lambda b: ours.step(b, size=size, beta=beta, word_keep=keep),
                "ours, eager (CPU default)": lambda b: eager.step(b, size=size, beta=beta, word_keep=keep),
                "plain, our likelihood": lambda b: plain_ours(b, size, beta, keep),
                "plain PyTorch": lambda b: plain(b, size, beta, keep),
                "Pyro SVI, Trace_ELBO": lambda b: stock_svi.step(b, size=size, beta=beta, word_keep=keep),
                "naive Pyro (Categorical)": lambda b: naive.step(b, size=size, beta=beta, word_keep=keep),
                "naive + stock ClippedAdam": lambda b: stock.step(b, size=size, beta=beta, word_keep=keep)}
    if args.amp == "bf16":  # the same autocast as training's --amp bf16, around every variant
        variants = {name: autocast(device, run) for name, run in variants.items()}
    for run in variants.values():  # warm up, on every batch (--compile step traces each shape once)
        for b in batches:
            run(b)
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):  # interleaved, so the machine's noise hits every variant alike,
        for name in names[r % len(names):] + names[: r % len(names)]:  # each round from the next one
            run = variants[name]
            sync(device)
            t = time.perf_counter()
            losses = [run(b) for b in batches]
            torch.as_tensor([float(x) for x in losses])  # the round's losses read once, as train reads them
            sync(device)
            times[name].append((time.perf_counter() - t) / len(batches))
    peak_flops = matmul_flops(device)
    flops = statistics.mean(step_flops(c, b) for b in batches)
    tokens = statistics.mean(b.num_tokens() for b in batches)
    padded = statistics.mean(b.targets.numel() for b in batches)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    where = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"preset {args.preset}: {where}, device {device}, torch threads {torch.get_num_threads()}; "
          f"vocab {c.vocab_size}, emb {c.emb_dim}, hidden {c.hidden}, z {c.z_dim}, batch {args.batch_size}, "
          f"{tokens / args.batch_size:.1f} real tokens per sentence ({100 * (1 - tokens / padded):.1f}% padding); "
          f"{len(batches)} batches x {args.rounds} rounds")
    print(f"autocast: {args.amp}; compile: {args.compile}; validation: {'on' if args.validation else 'off'}; matrix product ({2048}^3, "
          f"float32): {peak_flops / 1e9:.0f} GFLOP/s; step: {flops / 1e9:.2f} GFLOP")
    same = "plain, our likelihood"
    print(f"{'step':<26} {'ms/step':>8} {'tokens/s':>9} {'vs plain':>9} {'vs same':>8} {'of peak':>8}")
    for name, m in ms.items():
        print(f"{name:<26} {m:>8.2f} {tokens / m * 1000:>9.0f} {m / ms['plain PyTorch']:>8.3f}x "
              f"{m / ms[same]:>7.3f}x {100 * flops / (m / 1000) / peak_flops:>7.1f}%")
    print(f"Pyro's cost: ours / plain with the same likelihood kernel = {ms['ours (--compile step)'] / ms[same]:.3f}x "
          f"(eager, --compile off: {ms['ours, eager (CPU default)'] / ms[same]:.3f}x; Pyro's stock SVI step with "
          f"Trace_ELBO: {ms['Pyro SVI, Trace_ELBO'] / ms[same]:.3f}x)")
    print(f"ours is {ms['naive Pyro (Categorical)'] / ms['ours (--compile step)']:.2f}x faster than the naive Pyro step "
          f"(the Categorical likelihood alone), {ms['naive + stock ClippedAdam'] / ms['ours (--compile step)']:.2f}x "
          f"faster than it with Pyro's stock ClippedAdam (one optimizer per parameter)")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    else:
        print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")

    if args.profile:
        profile_step(variants["ours (--compile step)"], batches, device)
    if not args.no_eval:
        time_evaluation(svae, batches[0], c, args, device)
    return args.preset, ms


def time_evaluation(svae, b, c, args, device):
    svae.eval()
    with torch.inference_mode():
        sync(device)
        t = time.perf_counter()
        iw_log_likelihood(svae, b, samples=args.iw_samples, chunk=args.iw_chunk)
        sync(device)
        print(f"IW-NLL, K={args.iw_samples} ({args.iw_chunk} at a time): {b.size / (time.perf_counter() - t):.1f} sentences/s")
        z = torch.randn(64, c.z_dim, device=device)
        t = time.perf_counter()
        Beam(args.beam)(svae.decoder, z, 30, 64)
        sync(device)
        print(f"beam search, width {args.beam}, max 30 tokens: {64 / (time.perf_counter() - t):.1f} sentences/s")


if __name__ == "__main__":
    run_script(main)
