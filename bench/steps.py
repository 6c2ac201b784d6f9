"""Training-step time of several configurations of the default model, measured in one process,
the configurations interleaved step by step on the same batches (so that the machine's drift hits
all alike), on a prepared token store. Without --config: the Gaussian prior against
--prior mixture:K under each estimator (enum, concrete, reinforce).

    python bench/steps.py --data runs/ptb-store --steps 60 --k 10
    python bench/steps.py --data runs/ptb-store --config skip=skip:true --config bow=bow:1

Prints, per configuration, the median and mean step time, steps/s and real tokens/s (padding not
counted) at the median, and the ratio of medians to the first (the default options)."""

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI  # noqa: E402

from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae.data.corpus import batch_order, gather  # noqa: E402
from pyro_svae.devices import cpu_name  # noqa: E402
from pyro_svae.models.vae import SentenceVAE  # noqa: E402
from pyro_svae.training.rundir import model_config  # noqa: E402
from pyro_svae.data.store import is_store, load_store  # noqa: E402
from pyro_svae.training.config import TrainConfig  # noqa: E402
from pyro_svae.training.optim import GlobalClipAdam, make_loss  # noqa: E402


def setup(c, vocab, seed=0):
    """A fresh model, optimizer and SVI for config ``c`` (its own param store)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    svae = SentenceVAE(model_config({"train": c.__dict__}, vocab)).train()
    loss = make_loss(c)
    optim = GlobalClipAdam(c.lr, c.clip_norm)
    svi = SVI(svae.model, svae.guide, optim, loss, loss_and_grads=getattr(loss, "loss_and_grads", None))
    return svae, svi, pyro.get_param_store().get_state()


def parse_config(text):
    """"NAME=FIELD:VALUE,FIELD:VALUE" -> (NAME, TrainConfig with those fields)."""
    name, _, fields = text.partition("=")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    options = {}
    for item in filter(None, fields.split(",")):
        field, _, value = item.partition(":")
        if field not in types:
            sys.exit(f"error: --config {text}: {field!r} is not a train option")
        kind = types[field]
        options[field] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return name, TrainConfig(**options)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="A token store (python cli.py prepare --data CORPUS --out STORE).")
    parser.add_argument("--steps", type=int, default=60, help="Timed steps per configuration (after 5 warm-up steps).")
    parser.add_argument("--k", type=int, default=10, help="Mixture components.")
    parser.add_argument("--batch-size", type=int, default=32, help="Sentences per step.")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=FIELD:VALUE,...",
                        help="A configuration to time against the default options: train options (TrainConfig "
                             "fields) and their values, e.g. skip=skip:true. Repeatable; replaces the mixture set.")
    args = parser.parse_args()
    if not is_store(args.data):
        sys.exit(f"error: {args.data} is not a token store; make one with: python cli.py prepare --data CORPUS --out STORE")
    tokenizer, splits, _ = load_store(args.data)
    train = splits["train"]
    order = batch_order(train, args.batch_size, 0, 0)
    configs = {"default": TrainConfig()}
    if args.config:
        configs.update(parse_config(text) for text in args.config)
    else:
        for way in ("enum", "concrete", "reinforce"):
            configs[f"mixture:{args.k} {way}"] = TrainConfig(prior=f"mixture:{args.k}", discrete=way)
    runs = {}
    for name, c in configs.items():
        runs[name] = setup(c, len(tokenizer))
    times = {name: [] for name in configs}
    tokens = 0
    size = len(train)
    for step in range(args.steps + 5):
        batch = gather(train, order[step % len(order)])
        if step >= 5:
            tokens += batch.num_tokens()
        for name, c in configs.items():
            svae, svi, params = runs[name]
            pyro.get_param_store().clear()
            pyro.get_param_store().set_state(params)  # this configuration's parameters, and only those
            discrete = svae.estimator or None  # as Trainer passes it
            temperature = 0.5 if discrete == "concrete" else None
            began = time.perf_counter()
            svi.step(batch, size=size, beta=0.5, word_keep=c.word_keep, discrete=discrete, temperature=temperature)
            if step >= 5:
                times[name].append(time.perf_counter() - began)
            runs[name] = (svae, svi, pyro.get_param_store().get_state())
    print(f"CPU: {cpu_name()}; torch threads {torch.get_num_threads()}; {args.steps} steps of {args.batch_size} "
          f"sentences ({tokens / args.steps:.0f} real tokens per step)")
    base = statistics.median(times["default"])
    print(f"{'configuration':<24} {'median step':>12} {'mean step':>10} {'steps/s':>9} {'tokens/s':>10} {'x default':>11}")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:<24} {m * 1000:>10.1f}ms {statistics.mean(t) * 1000:>8.1f}ms {1 / m:>9.2f} "
              f"{tokens / args.steps / m:>10,.0f} {m / base:>11.2f}")


if __name__ == "__main__":
    run_script(main)
