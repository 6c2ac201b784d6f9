"""Training recipes at one budget on one corpus: what each keeps of a sentence against what it
scores. For each recipe: train, then on the test split the IW-NLL (K samples), KL, and the
greedy reconstruction's corpus BLEU-4 and content words kept.

    python bench/recipes.py --corpus short_yelp --minutes 10 --recipes default,ae,lm,bowman2015
    python bench/recipes.py --corpus stories --minutes 10
    python bench/recipes.py --corpus ptb --minutes 30

Corpora (from ../shared/data): ptb (its splits); stories (the sentences of ROCStories' splits);
short_yelp (the 10,000 labeled sentences without labels: the first 8,000 train, the next 1,000
valid, the last 1,000 test). --corpus-dir DIR takes any folder with train/valid/test.txt instead.
"""

import argparse
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyro_svae import config_from, load, train  # noqa: E402
from pyro_svae.devices import cpu_name  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
# name -> (preset, options, which checkpoint is evaluated)
RECIPES = {
    "default": ("default", {}, "best"),
    # the same networks with the KL weight ~0 and no floor: the channel's limit at this data and budget,
    # its checkpoint (and early stop) chosen by validation reconstruction BLEU, not by the ELBO at beta = 1
    "ae": ("default", dict(kl_schedule="constant:0.0001", free_bits=0.0, select="bleu"), "best"),
    "lm": ("default", dict(model="lm"), "best"),
    "bowman2015": ("bowman2015", {}, "best"),
    "li2019": ("default", dict(pretrain_steps=1000), "best"),
}


def corpus_folder(name, work):
    """A folder with train/valid/test.txt for ``name``, written under ``work`` where it needs writing."""
    if name == "ptb":
        return os.path.join(SHARED, "ptb")
    out = os.path.join(work, f"corpus-{name}")
    if os.path.isfile(os.path.join(out, "test.txt")):
        return out
    os.makedirs(out, exist_ok=True)
    if name == "stories":
        for split in ("train", "valid", "test"):
            lines = [ln for ln in open(os.path.join(SHARED, "stories", f"{split}.txt")) if ln.strip()]
            open(os.path.join(out, f"{split}.txt"), "w").writelines(lines)
    elif name == "short_yelp":
        lines = [ln.split("\t", 1)[1] for ln in open(os.path.join(SHARED, "short_yelp", "short_yelp.train.10000.txt"))]
        for split, part in (("train", lines[:8000]), ("valid", lines[8000:9000]), ("test", lines[9000:])):
            open(os.path.join(out, f"{split}.txt"), "w").writelines(part)
    else:
        raise SystemExit(f"--corpus {name}: use ptb, stories or short_yelp")
    return out


def run_recipe(name, data, work, minutes, steps, iw_samples, limit):
    preset, options, which = RECIPES[name]
    out = os.path.join(work, name)
    budget = dict(max_minutes=minutes) if minutes else dict(max_steps=steps, eval_every=max(steps // 2, 1))
    if not os.path.isfile(os.path.join(out, "best.pt")):
        train(config_from(preset, data=data, **{**options, **budget}), out, progress=False, log=lambda m: None)
    vae = load(out, device="cpu", which=which, warn=lambda m: None)
    test = vae.split("test", limit=limit)
    totals = vae.evaluate(test, iw_samples, progress=False)["totals"]
    metrics = list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))
    row = {"recipe": name, "steps": int(metrics[-1]["step"]), "nll": totals["nll"], "kl": totals.get("kl", 0.0)}
    if vae.z_dim:
        rec = vae.reconstruction(test)["totals"]
        row.update(bleu=rec["bleu"], content_kept=rec["content_kept"], exact=rec["exact"])
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="short_yelp", help="ptb, stories or short_yelp")
    p.add_argument("--corpus-dir", help="Any folder with train/valid/test.txt instead of --corpus.")
    p.add_argument("--recipes", default="default,ae,lm,bowman2015", help=f"Comma-separated, of {', '.join(RECIPES)}.")
    p.add_argument("--minutes", type=float, default=10, help="Training budget per recipe (0: --steps).")
    p.add_argument("--steps", type=int, default=1000, help="Steps per recipe when --minutes is 0.")
    p.add_argument("--iw-samples", type=int, default=100, help="K of the test IW-NLL.")
    p.add_argument("--limit", type=int, default=1000, help="The first N test sentences.")
    p.add_argument("--work", default="runs/recipes", help="Where the corpora and runs go.")
    args = p.parse_args()
    work = os.path.join(args.work, os.path.basename(args.corpus_dir.rstrip("/")) if args.corpus_dir else args.corpus)
    data = args.corpus_dir or corpus_folder(args.corpus, work)
    print(f"{cpu_name()}; corpus {data}; budget {f'{args.minutes:g} minutes' if args.minutes else f'{args.steps} steps'}")
    print("| recipe | steps | test NLL (IW) | KL | BLEU | content words kept | exact |")
    print("|---|---|---|---|---|---|---|")
    for name in args.recipes.split(","):
        r = run_recipe(name, data, work, args.minutes, args.steps, args.iw_samples, args.limit)
        rec = (f"{r['bleu']:.3f} | {r['content_kept']:.3f} | {r['exact']:.3f}" if "bleu" in r else "- | - | -")
        print(f"| {name} | {r['steps']} | {r['nll']:.2f} | {r['kl']:.2f} | {rec} |", flush=True)


if __name__ == "__main__":
    main()
