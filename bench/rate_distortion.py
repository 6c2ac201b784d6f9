"""The rate-distortion plane of the recipes that bench/recipes.py measured: for each corpus, every
recipe's test KL (rate) against its reconstruction loss (distortion), and its reconstruction
BLEU against its IW-NLL (with the refined proposal where measured), in one figure.

    python bench/rate_distortion.py [--work runs/recipes] [--out docs/rate_distortion.svg]
    python bench/rate_distortion.py --work docs/recipes    # the rows of docs/results.md

Reads WORK/*/results.csv (one per corpus); the LM (no latent) sits at rate 0.
"""

import argparse
import csv
import glob
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(work):
    """-> {corpus: [row, ...]} with numbers as floats ('' as None)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(work, "*", "results.csv"))):
        rows = [{k: (float(v) if v not in ("", None) and k != "recipe" else v or None) for k, v in r.items()}
                for r in csv.DictReader(open(path))]
        out[os.path.basename(os.path.dirname(path))] = rows
    return out


def nll(row):
    """The row's best estimate of -log p(x): with the refined proposal where it was measured."""
    return row.get("nll_refined") or row["nll"]


def plot(corpora, out):
    fig, (rd, bn) = plt.subplots(1, 2, figsize=(11, 4.5))
    for (corpus, rows), marker in zip(corpora.items(), "osD^v"):
        points = [r for r in rows if r["rec"] is not None]
        line = rd.scatter([r["kl"] for r in points], [r["rec"] for r in points], marker=marker, label=corpus)
        for r in points:
            rd.annotate(r["recipe"], (r["kl"], r["rec"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        scored = [r for r in rows if r["bleu"] is not None]
        bn.scatter([nll(r) for r in scored], [r["bleu"] for r in scored], marker=marker, color=line.get_facecolor(),
                   label=corpus)
        for r in scored:
            bn.annotate(r["recipe"], (nll(r), r["bleu"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        lm = [r for r in rows if r["recipe"] == "lm"]
        if lm:
            bn.axvline(lm[0]["nll"], color=line.get_facecolor()[0], lw=0.8, ls=":")
    rd.set(xlabel="rate: test KL (nats per sentence)", ylabel="distortion: test reconstruction loss (nats)",
           xscale="symlog", title="rate against distortion")
    bn.set(xlabel="test IW-NLL, q refined where measured (nats per sentence; dotted: the LM)", xscale="log",
           ylabel="test reconstruction BLEU-4 (greedy)", title="what a recipe keeps against what it scores")
    for ax in (rd, bn):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/recipes", help="bench/recipes.py's --work.")
    p.add_argument("--out", default="docs/rate_distortion.svg", help="The figure (.svg or .png).")
    args = p.parse_args()
    corpora = read(args.work)
    if not corpora:
        raise SystemExit(f"error: {args.work}: no */results.csv (run bench/recipes.py first)")
    print(f"{plot(corpora, args.out)}: {', '.join(f'{c} ({len(r)} recipes)' for c, r in corpora.items())}")


if __name__ == "__main__":
    main()
