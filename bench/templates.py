"""Does a mixture prior find the clusters it is meant to? A corpus written from K sentence
templates (each with one slot word drawn from its own small set), a VAE with --prior mixture:K
trained on it for several seeds, and the normalized mutual information (NMI) between each test
sentence's most probable component and its template: 1 when components and templates match.

    python bench/templates.py --seeds 0,1,2,3                       # enum, the defaults below
    python bench/templates.py --seeds 0,1,2,3 --option discrete=concrete --option free_bits=0.5
    python bench/templates.py --model class --labeled 0.01 --option alpha=50  # M2 (--prior class), 1% labeled
    python bench/templates.py --model class --labeled 0                       # M2 without labels

Each --option NAME=VALUE overrides a TrainConfig field of the base configuration. Prints one row
per seed (NMI, validation ELBO, rec, KL, the components' prior weights) and writes them as JSON
to --out/results.json."""

import argparse
import collections
import json
import math
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pyro  # noqa: E402
import torch  # noqa: E402

import pyro_svae  # noqa: E402
from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae.training.config import TrainConfig  # noqa: E402
from pyro_svae.training.run import train  # noqa: E402

TEMPLATES = ["the {} cat sat on the mat near the door", "{} stocks fell sharply in heavy trading today",
             "we do n't {} think so at all", "{} snow is expected tomorrow in the north",
             "my {} friend wants to visit the old castle", "they {} sold every house on this street last year"]

BASE = dict(z_dim=2, hidden=64, enc_hidden=0, emb_dim=32, batch_size=32, lr=3e-3, dropout=0.0, patience=0, eval_every=100,
            kl_schedule="linear:0,300", free_bits=0.0, word_keep=0.5, max_steps=800, skip=False, bow=0.0, device="cpu")


def write_corpus(folder, k, slots, seed=0, labeled=None, partition="template"):
    """train/valid/test (1,600 / 80 / 80 sentences) from the first k templates, each with ``slots``
    slot words of its own. -> the test sentences' templates. ``labeled`` (a fraction): lines
    LABEL<TAB>sentence, the label kept on that first fraction of train and on valid and test. The
    label is the template (``partition`` template) or, with ``cross``, (template + slot) mod k: as
    balanced a partition of the k x slots sentences, each class holding several templates."""
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    labels = {}
    for split, n in (("train", 1600), ("valid", 80), ("test", 80)):
        lines, labels[split] = [], []
        for _ in range(n):
            t, slot = rng.randrange(k), rng.randrange(slots)
            sentence = TEMPLATES[t].format(f"s{t}x{slot}")
            if labeled is not None:
                keep = split != "train" or len(lines) < n * labeled
                label = t if partition == "template" else (t + slot) % k
                sentence = f"{label if keep else ''}\t{sentence}"
            lines.append(sentence)
            labels[split].append(t)
        with open(os.path.join(folder, f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return labels["test"]


def nmi(a, b):
    """Normalized mutual information (geometric mean of the entropies) of two labelings."""
    n = len(a)
    ca, cb, cab = collections.Counter(a), collections.Counter(b), collections.Counter(zip(a, b))
    mi = sum(v / n * math.log(v * n / (ca[x] * cb[y])) for (x, y), v in cab.items())
    h = lambda c: -sum(v / n * math.log(v / n) for v in c.values())  # noqa: E731
    return mi / max(math.sqrt(h(ca) * h(cb)), 1e-12)


def sample_fidelity(vae, k, n=25):
    """The share of a class model's samples under --label t that are template t (its slot filled
    by one of t's slot words)."""
    good = 0
    for t in range(k):
        template = TEMPLATES[t].split()
        for text in vae.sample(n, label=str(t))[1]:
            words = text.split()
            good += len(words) == len(template) and all(
                w == p or (p == "{}" and w.startswith(f"s{t}x")) for w, p in zip(words, template))
    return good / (n * k)


def parse_option(text):
    name, _, value = text.partition("=")
    kind = type(getattr(TrainConfig(), name))
    return name, (value.lower() in ("1", "true", "yes") if kind is bool else kind(value))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=4, help="Templates, and mixture components (at most 6).")
    parser.add_argument("--slots", type=int, default=2, help="Slot words per template.")
    parser.add_argument("--seeds", default="0,1,2,3", help="Comma-separated training seeds.")
    parser.add_argument("--option", action="append", default=[], help="NAME=VALUE: a TrainConfig field (repeatable).")
    parser.add_argument("--out", default="/tmp/svae-templates", help="Work folder (corpus, runs, results.json).")
    parser.add_argument("--model", default="mixture", choices=["mixture", "class"],
                        help="mixture: --prior mixture:K; class: --prior class:K (M2), whose label causes x")
    parser.add_argument("--labeled", type=float, default=0.0, help="--model class: fraction of train labeled")
    parser.add_argument("--partition", default="template", choices=["template", "cross"],
                        help="--model class: the labels are the templates, or (template + slot) mod k")
    args = parser.parse_args()
    labeled = args.labeled if args.model == "class" else None
    test_labels = write_corpus(os.path.join(args.out, "corpus"), args.k, args.slots, labeled=labeled,
                               partition=args.partition)
    options = {**BASE, **dict(parse_option(o) for o in args.option)}
    rows = []
    print(f"{args.k} templates x {args.slots} slot words; options {options}")
    for seed in (int(s) for s in args.seeds.split(",")):
        run = os.path.join(args.out, f"run-{seed}")
        if os.path.isdir(run):
            import shutil

            shutil.rmtree(run)
        pyro.clear_param_store()
        extra = {"labels": "tab", "alpha": options.get("alpha", 50.0)} if labeled is not None else {}
        config = TrainConfig(**{**options, **extra, "data": os.path.join(args.out, "corpus"),
                                "prior": f"{args.model}:{args.k}", "seed": seed})
        summary = train(config, run, log=lambda *a: None, progress=False)
        vae = pyro_svae.load(run, device="cpu", which="last")
        with open(os.path.join(args.out, "corpus", "test.txt")) as f:
            sentences = [line.rpartition("\t")[2] for line in f.read().split("\n")[:-1]]
        pyro.set_rng_seed(0)
        last = summary["last"]
        if labeled is None:
            components = vae.component_posterior(sentences).argmax(1).tolist()
            row = {"seed": seed, "nmi": round(nmi(components, test_labels), 3), "val_elbo": last["val_elbo"],
                   "val_rec": last["val_rec"], "val_kl": last["val_kl"],
                   "weights": [round(float(w), 3) for w in vae.svae.prior.weights().detach()]}
        else:
            classes = vae.classify(sentences).argmax(1).tolist()
            row = {"seed": seed, "nmi": round(nmi(classes, test_labels), 3),
                   "accuracy": round(sum(a == b for a, b in zip(classes, test_labels)) / len(classes), 3),
                   "sample_fidelity": round(sample_fidelity(vae, args.k), 3), "val_elbo": last["val_elbo"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"NMI >= 0.9 in {sum(r['nmi'] >= 0.9 for r in rows)} of {len(rows)} seeds")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"options": options, "k": args.k, "slots": args.slots, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_script(main)
