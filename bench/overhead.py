"""Where our training step's time beyond the plain-PyTorch step goes, part by part, at one size
(default: bench/speed.py's tiny preset, where the arithmetic is cheap, as on a GPU).

    python bench/overhead.py --data ../shared/data/ptb
    python bench/overhead.py --data ../shared/data/ptb --preset bowman

Each part of ours is timed against the same part written by hand on the same networks and
batches (interleaved, medians of --rounds rounds), after the first step (registration done):
the guide under ``poutine.trace`` against the encoder and q's draw; the loss (guide trace, the
model replayed on it, the log-densities) against the hand-written ELBO; the loss with its
backward pass. Then the autograd nodes each loss adds, and the cost of Pyro's primitives alone
(one site in a plate, traced) on a [B, Z] Gaussian."""

import argparse
import os
import statistics
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402

from speed import PRESETS  # noqa: E402
from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae.data.corpus import batch_order, encode_sentences, gather, read_sentences, split_files  # noqa: E402
from pyro_svae.data.tokenizers import WordTokenizer  # noqa: E402
from pyro_svae.devices import cpu_name  # noqa: E402
from pyro_svae.inference.objectives import ReparamELBO  # noqa: E402
from pyro_svae.models.likelihood import token_nll  # noqa: E402
from pyro_svae.models.networks import word_dropout  # noqa: E402
from pyro_svae.models.registration import known_params  # noqa: E402
from pyro_svae.models.vae import ModelConfig, SentenceVAE  # noqa: E402
from pyro_svae.training.optim import GlobalClipAdam  # noqa: E402
from pyro_svae.training.step import DeviceSVI  # noqa: E402


def autograd_nodes(loss):
    """The types of the autograd nodes behind ``loss``: Counter."""
    seen, stack = set(), [loss.grad_fn]
    while stack:
        f = stack.pop()
        if f is not None and f not in seen:
            seen.add(f)
            stack.extend(g for g, _ in f.next_functions)
    return Counter(type(f).__name__ for f in seen)


def median_ms(run, batches, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for b in batches:
            run(b)
        times.append((time.perf_counter() - t) / len(batches) * 1e3)
    return statistics.median(times)


def primitive_cost(batch_size, z_dim, repeats=2000):
    """µs per call: a [B, Z] Gaussian draw; the same as a Pyro site, traced; the site in a plate."""
    loc, scale = torch.zeros(batch_size, z_dim, requires_grad=True), torch.ones(batch_size, z_dim)
    bare = lambda: dist.Normal(loc, scale).to_event(1).rsample()  # noqa: E731
    site = lambda: pyro.sample("z", dist.Normal(loc, scale).to_event(1))  # noqa: E731

    def in_plate():
        with pyro.plate("sentences", batch_size):
            return site()
    out = {}
    for name, fn in (("draw", bare), ("traced site", lambda: poutine.trace(site).get_trace()),
                     ("traced site in a plate", lambda: poutine.trace(in_plate).get_trace())):
        fn()
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[name] = (time.perf_counter() - t) / repeats * 1e6
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--data", default="data/ptb")
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--length", type=int, default=22, help="only batches of sentences of about this length")
    parser.add_argument("--batch-size", type=int, default=0, help="sentences per step (0: the preset's)")
    parser.add_argument("--steps", type=int, default=0, help="batches per round (0: the preset's)")
    args = parser.parse_args()
    p = dict(PRESETS[args.preset])
    p["batch_size"], p["steps"] = args.batch_size or p["batch_size"], args.steps or p["steps"]
    torch.set_num_threads(p.get("threads") or torch.get_num_threads())
    pyro.enable_validation(False)
    pyro.clear_param_store()
    torch.manual_seed(0)
    sentences, _ = read_sentences(split_files(args.data)["train"])
    tokenizer = WordTokenizer.build(sentences, max_size=p["vocab_size"])
    train, _ = encode_sentences(sentences, tokenizer, max_len=100)
    batches = [gather(train, b) for b in batch_order(train, p["batch_size"], seed=0, epoch=0)]
    batches = [b for b in batches if abs(b.targets.shape[1] - (args.length + 1)) <= 1 and b.size == p["batch_size"]][: p["steps"]]
    c = ModelConfig(vocab_size=len(tokenizer), emb_dim=p["emb_dim"], hidden=p["hidden"], z_dim=p["z_dim"])
    if not batches:
        sys.exit(f"error: no batch of {p['batch_size']} sentences of about {args.length} tokens in {args.data}")
    svae = SentenceVAE(c).train()
    size, beta, keep = len(train), 0.5, 0.75
    kw = dict(size=size, beta=beta, word_keep=keep)
    elbo = ReparamELBO()
    DeviceSVI(svae.model, svae.guide, GlobalClipAdam(1e-3, 5.0), elbo).step(batches[0], **kw)  # registration

    def plain_loss(b):
        q = svae.posterior(svae.encoder(b.targets, b.lengths))
        z = q.rsample()
        logits, _ = svae.decoder(word_dropout(b.inputs, keep), z)
        log_p = dist.Normal(0.0, 1.0).log_prob(z).sum()
        return (size / b.size) * (token_nll(logits, b.targets).sum() - beta * (log_p - q.log_prob(z).sum()))

    ours_loss = lambda b: elbo.differentiable_loss(svae.model, svae.guide, b, **kw)  # noqa: E731
    parts = {
        "guide": (lambda b: poutine.trace(svae.guide).get_trace(b, **kw),
                  lambda b: svae.posterior(svae.encoder(b.targets, b.lengths)).rsample()),
        "loss (traces, log-densities)": (ours_loss, plain_loss),
        "loss and backward": (lambda b: ours_loss(b).backward(), lambda b: plain_loss(b).backward()),
    }
    print(f"{args.preset}: {cpu_name()}, torch threads {torch.get_num_threads()}; {len(batches)} batches of "
          f"{p['batch_size']}, medians of {args.rounds} rounds; ms per step")
    print(f"{'part':<30} {'ours':>7} {'plain':>7} {'ours - plain':>13}")
    with known_params():
        for name, (ours, plain) in parts.items():
            o, q = median_ms(ours, batches, args.rounds), median_ms(plain, batches, args.rounds)
            print(f"{name:<30} {o:>7.3f} {q:>7.3f} {o - q:>13.3f}")
        svae.zero_grad(set_to_none=True)
        extra = autograd_nodes(ours_loss(batches[0])) - autograd_nodes(plain_loss(batches[0]))
    print(f"autograd nodes ours adds: {sum(extra.values())} ({', '.join(f'{k} {v}' for k, v in extra.items())})")
    cost = primitive_cost(p["batch_size"], p["z_dim"])
    print("Pyro's primitives, µs per call: " + ", ".join(f"{k} {v:.1f}" for k, v in cost.items()))


if __name__ == "__main__":
    run_script(main)
