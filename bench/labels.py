"""Semi-supervised sentiment on short Yelp: the M2 model (--prior class) against three baselines
at N labeled sentences, the rest of the corpus unlabeled.

    python bench/labels.py --data ../shared/data/short_yelp --minutes 3 --sizes 100,500,1000,2000

From short_yelp.train.10000.txt (whose first N lines are the README's nested labeled subsets):
lines 1-8,500 train (the first N labeled, the rest unlabeled), 8,501-9,000 valid, the last 1,000
test. Per N, test accuracy of: M2 trained --minutes on all 8,500 (y summed over where unknown);
the same encoder and classifier head trained on the N labels alone (cross-entropy, --epochs);
bag-of-words logistic regression on the N labels; and a logistic-regression probe on the posterior
means of a Gaussian-prior VAE trained --minutes on the 8,500 without labels. Writes
WORK/results.json and prints the table with the majority-class rate."""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pyro_svae  # noqa: E402
from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae.data.corpus import gather  # noqa: E402
from pyro_svae.devices import cpu_name  # noqa: E402
from pyro_svae.evaluation.adversarial import unigram_counts  # noqa: E402
from pyro_svae.models.networks import Encoder  # noqa: E402
from pyro_svae.training.config import TrainConfig, config_from  # noqa: E402
from pyro_svae.training.rundir import load_corpus  # noqa: E402
from pyro_svae.training.run import train  # noqa: E402

TRAIN, VALID = 8500, 500


def write_corpus(source, folder, labeled, lines=None):
    """The split of the 10,000 lines into train (first ``labeled`` labeled), valid and test."""
    lines = lines if lines is not None else open(source, encoding="utf-8").read().splitlines()
    n = len(lines)
    test_start = n - 1000 if n >= 2000 else n - n // 10
    train_end = min(TRAIN, test_start - max(test_start // 10, 1))
    os.makedirs(folder, exist_ok=True)
    parts = {"train": lines[:train_end], "valid": lines[train_end:test_start][:VALID], "test": lines[test_start:]}
    for split, rows in parts.items():
        out = []
        for i, line in enumerate(rows):
            label, _, text = line.partition("\t")
            out.append(f"{label if split != 'train' or i < labeled else ''}\t{text}")
        with open(os.path.join(folder, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
    return folder


def logistic_accuracy(x, y, xt, yt, classes, steps=300, weight_decay=1e-3, seed=0):
    """Multinomial logistic regression on features x [N, D] (standardized), test accuracy on xt."""
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6) if len(x) > 1 else torch.ones(x.shape[1])
    x, xt = (x - mean) / std, (xt - mean) / std
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        return float((model(xt).argmax(-1) == yt).float().mean())


def bag_of_words(split, positions, vocab_size):
    return unigram_counts([split.sentence(i) for i in positions], vocab_size)


def supervised_accuracy(split, labeled, test, c, classes, vocab_size, epochs, seed=0):
    """The M2 run's encoder and classifier head (same sizes), trained on the labeled sentences alone."""
    torch.manual_seed(seed)
    encoder = Encoder(vocab_size, c["emb_dim"], c["enc_hidden"] or c["hidden"], c["enc_layers"], c["bidirectional"],
                      c["dropout"])
    head = nn.Sequential(nn.Linear(encoder.out_dim, encoder.out_dim), nn.Tanh(), nn.Linear(encoder.out_dim, classes))
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=c["lr"])
    for _ in range(epochs):
        encoder.train()
        for chunk in torch.randperm(len(labeled)).split(32):
            b = gather(split, [labeled[i] for i in chunk.tolist()])
            optimizer.zero_grad()
            F.cross_entropy(head(encoder(b.targets, b.lengths)), b.labels).backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
    encoder.eval()
    with torch.no_grad():
        b = gather(test, list(range(len(test))))
        return float((head(encoder(b.targets, b.lengths)).argmax(-1) == b.labels).float().mean())


def run(config, folder, out, log):
    if not os.path.isfile(os.path.join(out, "best.pt")):
        pyro.clear_param_store()
        train(config_from(data=folder, **config), out, log=log, progress=False)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--data", default="../shared/data/short_yelp", help="the short_yelp folder")
    parser.add_argument("--sizes", default="100,500,1000,2000", help="numbers of labeled training sentences")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of each VAE run")
    parser.add_argument("--steps", type=int, default=0, help="a step budget instead (0: --minutes)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the supervised baseline")
    parser.add_argument("--option", action="append", default=[], help="NAME=VALUE for the M2 runs (repeatable)")
    parser.add_argument("--work", default="runs/labels", help="work folder (corpora, runs, results.json)")
    args = parser.parse_args()
    source = os.path.join(args.data, "short_yelp.train.10000.txt")
    if not os.path.isfile(source):
        sys.exit(f"error: {source}: not found")
    budget = dict(max_steps=args.steps) if args.steps else dict(max_minutes=args.minutes)
    # the defaults of earlier versions (--preset plain), with which the README's table was measured
    base = dict(preset="plain", labels="tab", patience=0, eval_every=250, device="cpu", **budget)
    extra = {}
    for option in args.option:
        name, _, value = option.partition("=")
        extra[name] = type(getattr(TrainConfig(), name))(value)
    log = lambda *a: None  # noqa: E731
    print(f"{cpu_name()}, torch threads {torch.get_num_threads()}; {budget}")
    vae = run(base, write_corpus(source, os.path.join(args.work, "corpus-0"), 0), os.path.join(args.work, "vae"), log)
    vae_model = pyro_svae.load(vae, device="cpu")
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        folder = write_corpus(source, os.path.join(args.work, f"corpus-{n}"), n)
        m2 = run({**base, "prior": "class", **extra}, folder, os.path.join(args.work, f"m2-{n}"), log)
        model = pyro_svae.load(m2, device="cpu")
        splits = load_corpus(m2)
        train_split, test = splits["train"], splits["test"]
        labeled = [i for i in range(len(train_split)) if train_split.labels[i] >= 0]
        everything = list(range(len(test)))
        test_batch = gather(test, everything)
        y, yt = torch.tensor([int(train_split.labels[i]) for i in labeled]), test_batch.labels
        classes = len(model.labels)
        with torch.no_grad():
            m2_accuracy = float((model.svae.classify(test_batch).argmax(-1) == yt).float().mean())
            means = vae_model.svae.posterior_mean(gather(train_split, labeled))
            test_means = vae_model.svae.posterior_mean(test_batch)
        vocab = len(model.tokenizer)
        row = {"labeled": n, "m2": m2_accuracy,
               "supervised": supervised_accuracy(train_split, labeled, test, model.config["train"], classes, vocab,
                                                 args.epochs),
               "bow_logistic": logistic_accuracy(bag_of_words(train_split, labeled, vocab), y,
                                                 bag_of_words(test, everything, vocab), yt, classes),
               "vae_probe": logistic_accuracy(means, y, test_means, yt, classes),
               "majority": float((yt == torch.bincount(yt).argmax()).float().mean()), "test": len(test)}
        rows.append(row)
        print(json.dumps(row))
    print(f"\n{'labeled':>8} {'M2':>6} {'supervised':>11} {'BoW LR':>7} {'VAE probe':>10} {'majority':>9}")
    for r in rows:
        print(f"{r['labeled']:>8} {r['m2']:>6.3f} {r['supervised']:>11.3f} {r['bow_logistic']:>7.3f} "
              f"{r['vae_probe']:>10.3f} {r['majority']:>9.3f}")
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    run_script(main)
