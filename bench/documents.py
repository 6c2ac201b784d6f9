"""Documents at one budget: the chain model under its three guides against two baselines, a sentence
VAE (no chain) and the LSTM LM of whole documents, all on the same token store and networks.

    python bench/documents.py --minutes 8                 # ../shared/data/stories, ROCStories
    python bench/documents.py --data DIR --minutes 1      # any corpus with an empty line between documents

For each run: train (a run already trained is reused), then on the test split the NLL per document
and per sentence (IW, K samples; the LM's exact), the NLL of the t-th sentence given sentences
1..t-1, the chain's ELBO and KL per sentence, and the Story Cloze validation accuracy (the ending of
the more probable story). Writes WORK/results.md and results.json; the CPU is named with them.
"""

import argparse
import json
import os
import sys
import time

import pyro
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae import config_from, load, train  # noqa: E402
from pyro_svae.data.store import StoreOptions, is_store, prepare_store  # noqa: E402
from pyro_svae.devices import cpu_name  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
# name -> options beyond the shared ones
RUNS = {
    "doc-meanfield": dict(prior="chain", guide="doc-meanfield"),
    "doc-structured": dict(prior="chain", guide="doc-structured"),
    "doc-conjugate": dict(prior="chain", guide="doc-conjugate"),
    "sentence-vae": dict(batch_size=40),  # about a chain batch's sentences (8 stories of 5)
    "lm": dict(model="lm"),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(SHARED, "stories"), help="A corpus of documents (blank lines).")
    p.add_argument("--cloze", default=os.path.join(SHARED, "stories", "cloze.valid.tsv"), help="'' to skip.")
    p.add_argument("--work", default="runs/documents")
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--minutes", type=float, default=8.0, help="Training budget of each run.")
    p.add_argument("--steps", type=int, default=0, help="Or a number of steps (0: the minutes).")
    p.add_argument("--vocab-size", type=int, default=4000, help="Sentencepiece pieces.")
    p.add_argument("--iw-samples", type=int, default=100)
    p.add_argument("--cloze-samples", type=int, default=20, help="IW draws per story in the cloze task.")
    p.add_argument("--limit", type=int, default=0, help="Test documents (and cloze items) scored (0: all).")
    p.add_argument("--option", action="append", default=[], help="NAME=VALUE for every run (e.g. emb_dim=64).")
    p.add_argument("--table-only", action="store_true", help="Render WORK/results.json again, measuring nothing.")
    a = p.parse_args()
    if a.table_only:
        print(render(json.load(open(os.path.join(a.work, "results.json"))), a))
        return

    store = os.path.join(a.work, "store")
    if not is_store(store):
        prepare_store(a.data, store, StoreOptions(tokenizer="spm", vocab_size=a.vocab_size, documents="blank",
                                                  max_len=60), progress=False)
    shared = dict(data=store, emb_dim=256, hidden=256, enc_hidden=256, z_dim=32, batch_size=8, free_bits=0.125,
                  max_minutes=a.minutes, max_steps=a.steps, eval_every=250, patience=4, seed=0,
                  preset="plain")  # as docs/documents.md's table was measured
    for item in a.option:
        key, value = item.split("=", 1)
        shared[key] = type(shared.get(key, ""))(value) if key in shared else _number(value)
    rows = {}
    for name in a.runs.split(","):
        run = os.path.join(a.work, name)
        if not os.path.isfile(os.path.join(run, "best.pt")):
            pyro.clear_param_store()
            summary = train(config_from(**{**shared, **RUNS[name]}), run, progress=False)
            print(f"{name}: {summary['step']} steps ({summary['stopped']})", flush=True)
        rows[name] = measure(name, run, a)
        print(name, json.dumps(rows[name]), flush=True)
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    table = render(rows, a)
    with open(os.path.join(a.work, "results.md"), "w") as f:
        f.write(table)
    print(table)


def _number(value):
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def measure(name, run, a):
    vae = load(run, warn=lambda m: None)
    steps = int(open(os.path.join(run, "metrics.csv")).read().strip().splitlines()[-1].split(",")[0])
    began = time.time()
    torch.manual_seed(0)
    result = vae.evaluate_documents("test", a.iw_samples, limit=a.limit, progress=False)
    row = {"steps": steps, "nll": result["nll"], "nll_sentence": result["nll_sentence"],
           "by_position": result["by_position"], "elbo": result.get("elbo"), "kl": result.get("kl_sentence"),
           "ppl": result["ppl"], "documents": result["documents"], "eval_minutes": (time.time() - began) / 60}
    if a.cloze:
        row["cloze"] = vae.cloze(a.cloze, a.cloze_samples, limit=a.limit, progress=False)[0]
    return row


def render(rows, a):
    K = a.iw_samples
    budget = f"{a.steps} steps" if a.steps else f"{a.minutes:g} minutes"
    lines = [f"Test split, nats (IW, K = {K}; the LM exact). Each run {budget} on {cpu_name()}, "
             f"{torch.get_num_threads()} threads.",
             "", "| model | steps | NLL / document | NLL / sentence | sentence 5 given 1-4 | sentences 2-5 given earlier "
             "| ELBO / document | KL / sentence | cloze accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for name, r in rows.items():
        later = r["by_position"][1:]
        lines.append(f"| {name} | {r['steps']} | {fmt(r['nll'])} | {fmt(r['nll_sentence'])} | "
                     f"{fmt(r['by_position'][4] if len(r['by_position']) > 4 else None)} | "
                     f"{fmt(sum(later) / len(later) if later else None)} | {fmt(r['elbo'])} | {fmt(r['kl'])} | "
                     f"{fmt(r.get('cloze'), 3)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script(main)
