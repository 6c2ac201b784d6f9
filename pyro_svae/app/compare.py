"""The structured mean-field experiment: fit the same sentence model with several variational
families under one budget and seed, evaluate each, and write a table and a plot."""

import csv
import dataclasses
import os

from ..data.documents import gather_documents
from ..evaluation.documents import refined_elbo
from ..models.documents import DOCUMENT_GUIDES
from ..models.guides import guide_class
from ..training.run import train
from .trained import load

COLUMNS = ["guide", "elbo", "nll", "gap", "kl", "mutual_information", "active_units", "steps", "minutes"]
DOCUMENT_COLUMNS = ["guide", "elbo", "nll", "nll_sentence", "kl", "amortization_gap", "steps", "minutes"]
REFINED_DOCUMENTS = 64  # the first test documents whose q is refined for the amortization gap


def compare_guides(config, guides, out_dir, samples=100, split="test", log=print, progress=True, refine=50):
    """Train ``config`` once per guide spec into ``out_dir/<guide>``; -> rows of results. The document
    guides (doc-*, --prior chain) are scored per document, with the amortization gap (the ELBO of q
    refined per document by ``refine`` steps minus the encoder's, on the first 64 documents)."""
    os.makedirs(out_dir, exist_ok=True)
    rows, curves = [], {}
    documents = all(spec in DOCUMENT_GUIDES for spec in guides)
    for spec in guides:
        run = os.path.join(out_dir, spec.replace(":", "-"))
        prior = "chain" if spec in DOCUMENT_GUIDES else guide_class(spec).prior
        c = dataclasses.replace(config, guide=spec, prior=prior)
        if not os.path.isfile(os.path.join(run, "best.pt")):
            log(f"--- {spec}")
            train(c, run, log=log, progress=progress)
        vae = load(run, device=config.device)
        with open(os.path.join(run, "metrics.csv")) as f:
            metrics = list(csv.DictReader(f))
        curves[spec] = [(int(m["step"]), float(m["val_elbo"])) for m in metrics]
        row = {"guide": spec, "steps": int(metrics[-1]["step"]), "minutes": float(metrics[-1]["minutes"])}
        if documents:
            row.update(_document_row(vae, split, samples, refine, progress))
        else:
            t = vae.evaluate(split, samples, progress=progress)["totals"]
            row.update({"elbo": t["elbo"], "nll": t["nll"], "gap": -t["elbo"] - t["nll"], "kl": t["kl"],
                        "mutual_information": t["mutual_information"], "active_units": t["active_units"]})
        rows.append(row)
    (write_document_table if documents else write_table)(rows, os.path.join(out_dir, "results.md"), split, samples)
    plotted = write_plot(rows, curves, os.path.join(out_dir, "results.png"), split)
    return rows, plotted


def _document_row(vae, split, samples, refine, progress):
    t = vae.evaluate_documents(split, samples, progress=progress)
    data = vae.document_split(split)
    positions = list(range(min(REFINED_DOCUMENTS, len(data))))
    gaps = []
    for start in range(0, len(positions), 16):
        amortized, refined = refined_elbo(vae.chain, gather_documents(data, positions[start : start + 16]), refine)
        gaps.append(refined - amortized)
    return {"elbo": t["elbo"], "nll": t["nll"], "nll_sentence": t["nll_sentence"], "kl": t["kl_sentence"],
            "amortization_gap": float(sum(g.sum() for g in gaps) / len(positions))}


def write_document_table(rows, path, split, samples):
    lines = [f"{split} split, nats; ELBO and IW-NLL (K = {samples}) per document, KL per sentence; the "
             f"amortization gap: the ELBO of q refined per document minus the encoder's, per document (first "
             f"{REFINED_DOCUMENTS} documents).", "",
             "| guide | ELBO | IW-NLL | IW-NLL / sentence | KL / sentence | amortization gap | steps | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in DOCUMENT_COLUMNS) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


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
    unit = "document" if "nll_sentence" in (rows[0] if rows else {}) else "sentence"
    left.set(ylabel=f"validation ELBO (nats/{unit})")
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
