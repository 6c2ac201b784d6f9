"""The structured mean-field experiment: fit the same sentence model with several variational
families under one budget and seed, evaluate each, and write a table and a plot."""

import csv
import dataclasses
import os

from ..models.guides import guide_class
from ..training.run import train
from .trained import load

COLUMNS = ["guide", "elbo", "nll", "gap", "kl", "mutual_information", "active_units", "steps", "minutes"]


def compare_guides(config, guides, out_dir, samples=100, split="test", log=print, progress=True):
    """Train ``config`` once per guide spec into ``out_dir/<guide>``; -> rows of results."""
    os.makedirs(out_dir, exist_ok=True)
    rows, curves = [], {}
    for spec in guides:
        run = os.path.join(out_dir, spec.replace(":", "-"))
        c = dataclasses.replace(config, guide=spec, prior=guide_class(spec).prior)
        if not os.path.isfile(os.path.join(run, "best.pt")):
            log(f"--- {spec}")
            train(c, run, log=log, progress=progress)
        vae = load(run, device=config.device)
        t = vae.evaluate(split, samples, progress=progress)["totals"]
        with open(os.path.join(run, "metrics.csv")) as f:
            metrics = list(csv.DictReader(f))
        curves[spec] = [(int(m["step"]), float(m["val_elbo"])) for m in metrics]
        rows.append({"guide": spec, "elbo": t["elbo"], "nll": t["nll"], "gap": -t["elbo"] - t["nll"],
                     "kl": t["kl"], "mutual_information": t["mutual_information"],
                     "active_units": t["active_units"], "steps": int(metrics[-1]["step"]),
                     "minutes": float(metrics[-1]["minutes"])})
    write_table(rows, os.path.join(out_dir, "results.md"), split, samples)
    plotted = write_plot(rows, curves, os.path.join(out_dir, "results.png"), split)
    return rows, plotted


def _fmt(value, digits=2):
    if value is None or value != value:  # None or NaN
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_table(rows, path, split, samples):
    lines = [f"{split} split, nats per sentence; NLL is the importance-weighted estimate with K = {samples}; "
             "gap = -ELBO - NLL (the looseness of the bound).", "",
             "| guide | ELBO | IW-NLL | gap | KL | MI | AU | steps | minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(rows, curves, path, split="test"):
    """Validation ELBO against steps per guide, and -ELBO against IW-NLL. False if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec, points in curves.items():
        left.plot(*zip(*points), marker="o", markersize=3, label=spec)
    left.set(xlabel="step", ylabel="validation ELBO (nats/sentence)", title="training")
    left.legend(fontsize=8)
    scored = [r for r in rows if r["nll"] == r["nll"]]  # a point estimate has no IW-NLL
    for r in scored:
        right.scatter(r["nll"], -r["elbo"], label=r["guide"])
        right.annotate(r["guide"], (r["nll"], -r["elbo"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    lo = min([r["nll"] for r in scored] or [0])
    hi = max([-r["elbo"] for r in scored] or [1])
    right.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--", label="-ELBO = NLL")
    right.set(xlabel="IW-NLL", ylabel="-ELBO", title=f"bound vs. estimate ({split})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
