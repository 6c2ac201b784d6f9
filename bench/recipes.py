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
import json
import os
import sys

import pyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae import config_from, load, train  # noqa: E402
from pyro_svae.training.config import PRESETS  # noqa: E402
from pyro_svae.devices import cpu_name  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
# The defaults of earlier versions that the recipes below were measured with (--preset plain: a 16-nat
# floor, Adam 2e-3, neither the skip connection nor the bag-of-words term). Every recipe but `default`
# states what it takes of them, so that its name keeps its meaning as defaults change (the autoencoder
# and bowman2015 presets set their own floor; bowman2015 its own rate).
PLAIN = PRESETS["plain"]
AE = {k: v for k, v in PLAIN.items() if k not in ("free_bits", "select")}  # the preset sets floor and select
# the defaults of the previous version (the nobow recipe): a 32-nat floor, z fed at every step, best.pt
# by the validation ELBO, no weight average; the recipes measured on them state them, so that each
# keeps its meaning (PLAIN and AE have no average either: the plain preset states it)
# Bowman's 191 units in both LSTMs: the networks of every version before the fast ones (PLAIN and AE
# have them from the plain preset)
SLOW = dict(hidden=191, enc_hidden=0)
# the networks of this version's defaults, stated for the recipes measured on them
FAST = dict(hidden=192, enc_hidden=96)
WIDE = dict(hidden=192, enc_hidden=128)  # the same decoder, a wider encoder
V3 = dict(bow=0.0, feed_z=True, free_bits=1.0, select="elbo", ema=0.0, **SLOW)
# the options of the previous version (the floored-ema recipe), stated for the recipes measured on
# them; this version's defaults are these options on faster networks (the fast recipe)
V4 = dict(bow=0.0, feed_z=False, free_bits=0.9, select="floored", ema=0.999, **SLOW)
# name -> (preset, options, which checkpoint is evaluated)
RECIPES = {
    "default": ("default", {}, "best"),  # the defaults of this version: fast below
    "plain": ("plain", {}, "best"),  # the defaults of earlier versions
    # the same networks with the KL weight ~0 and no floor: the channel's limit at this data and budget,
    # its checkpoint (and early stop) chosen by validation reconstruction BLEU, not by the ELBO at beta = 1
    "ae": ("autoencoder", AE, "best"),
    # the same, trained for the whole budget: the validation BLEU (100 sentences) is too noisy to stop on
    "ae-full": ("autoencoder", dict(AE, patience=0), "best"),
    "lm": ("default", dict(model="lm", lr=2e-3, ema=0.0, **SLOW), "best"),
    "lm-fast": ("default", dict(model="lm", lr=2e-3, ema=0.0, **FAST), "best"),  # the decoder of fast
    "bowman2015": ("bowman2015", {}, "best"),
    "li2019": ("li2019", PLAIN, "best"),
    "fb1": ("default", dict(PLAIN, free_bits=1.0), "best"),
    "bowman-fb": ("bowman2015", dict(free_bits=1.0), "best"),
    "pool-mean": ("default", dict(PLAIN, pool="mean"), "best"),  # the encoder's outputs averaged (Long et al. 2019)
    "pool-max": ("default", dict(PLAIN, pool="max"), "best"),
    # trained on the 5-sample importance-weighted bound (Burda et al. 2016): a tighter objective, and an
    # encoder trained as a proposal rather than as a posterior
    "iw5": ("default", dict(PLAIN, iw_particles=5), "best"),
    "fb1-iw5": ("default", dict(PLAIN, free_bits=1.0, iw_particles=5), "best"),
    # the learning rate halved at each validation without a better score (the default stops after 4)
    "decay": ("default", dict(PLAIN, lr_decay=0.5), "best"),
    "fb1-decay": ("default", dict(PLAIN, free_bits=1.0, lr_decay=0.5), "best"),
    "lm-decay": ("default", dict(model="lm", lr=2e-3, lr_decay=0.5), "best"),
    # z also read past the LSTM: a learned linear term in the logits at every step (Dieng et al. 2019),
    # alone and with the bag-of-words term (Zhao et al. 2017), at a 16-nat floor and at a 32-nat one
    "skip": ("default", dict(PLAIN, skip=True), "best"),
    "skip-bow": ("default", dict(PLAIN, skip=True, bow=1.0), "best"),
    "fb1-skip-bow": ("default", dict(PLAIN, skip=True, bow=1.0, free_bits=1.0), "best"),
    # the same with the learning rate halved at each validation without a better ELBO, where the
    # defaults stop early on the small corpora with half the budget left
    "skip-bow-decay": ("default", dict(PLAIN, skip=True, bow=1.0, lr_decay=0.5), "best"),
    "fb1-skip-bow-decay": ("default", dict(PLAIN, skip=True, bow=1.0, free_bits=1.0, lr_decay=0.5), "best"),
    # at Bowman's learning rate (1e-3), which overfits the small corpora later than 2e-3: the defaults now
    "fb1-skip-bow-lr1": ("default", dict(V3, skip=True, bow=1.0, lr=1e-3), "best"),
    # the defaults without dropout (bowman2015 has none and does not overfit these corpora in the budget)
    "d0": ("default", dict(V3, dropout=0.0), "best"),
    # the defaults with a learned prior, a mixture of 16 Gaussians (its component summed out): the
    # aggregate posterior of a 32-nat code need not fill N(0, I)
    "mix16": ("default", dict(V3, prior="mixture:16"), "best"),
    # the earlier defaults (fb1-skip-bow-lr1) without the bag-of-words term, the defaults since: at a
    # 32-nat floor the floor, not the term, keeps the rate (bow=0.0 stated, so the row keeps its meaning)
    "nobow": ("default", V3, "best"),
    # nobow with z read only by the decoder's initial state and the skip term, not fed at every step
    # (bowman2015's decoder, which beats the LM on the small corpora, is not fed z)
    "nobow-nofeed": ("default", dict(V3, feed_z=False), "best"),
    # the same at a 25.6-nat floor: nobow-nofeed's BLEU margin traded for likelihood
    "nofeed-fb08": ("default", dict(V3, feed_z=False, free_bits=0.8), "best"),
    # between the two: a 28.8-nat floor
    "nofeed-fb09": ("default", dict(V3, feed_z=False, free_bits=0.9), "best"),
    # the same with best.pt and early stopping by the validation bound with the KL floored as training
    # floors it: below the floor that follows the reconstruction, where the ELBO stops the small corpora
    # early. The defaults since (all four options stated, so that the row keeps its meaning)
    "nofeed-fb09-floored": ("default", dict(V4, ema=0.0), "best"),
    # the defaults without dropout, as bowman2015's decoder (which beats the LM of dropout 0.2 on PTB)
    "floored-d0": ("default", dict(V4, dropout=0.0, ema=0.0), "best"),
    # the defaults with validation, selection and best.pt on a moving average of the weights (--ema)
    "floored-ema": ("default", V4, "best"),
    "bowman2015-ema": ("bowman2015", dict(ema=0.999), "best"),
    # the defaults at twice the learning rate: the average smooths the larger steps (PTB is still
    # learning at 30 minutes)
    "floored-ema-lr2": ("default", dict(V4, lr=2e-3), "best"),
    # the same rate falling to 0 along a cosine over 9,500 steps (what 30 minutes of PTB hold on this
    # machine): the fast start of 2e-3 without its plateau (annealing the rate, not averaging weights)
    "floored-ema-lr2-cos": ("default", dict(V4, lr=2e-3, lr_schedule="cosine", max_steps=9500), "best"),
    "floored-d0-ema": ("default", dict(V4, dropout=0.0), "best"),
    # the defaults on faster networks: a 192-unit decoder (191 slows the LSTMs' and the output layer's
    # products) and a bidirectional encoder of 96 units a direction (a 192-d summary): 1.31x the
    # tokens/s, 14% more steps in PTB's 30 minutes with its validations (docs/results.md)
    "fast": ("default", dict(V4, **FAST), "best"),  # the defaults now
    "fast-seed1": ("default", dict(V4, **FAST, seed=1), "best"),  # the same from another seed
    "fast-seed2": ("default", dict(V4, **FAST, seed=2), "best"),  # and a third
    # the autoencoder of those networks (as ae-skip-bow), the whole budget: their channel's limit
    "he2019-fast": ("he2019", dict(V4, **FAST), "best"),  # the defaults with He et al.'s aggressive encoder
    "he2019-fast-e100": ("he2019", dict(V4, **FAST, eval_every=100), "best"),  # its phase judged every 100 steps
    "ae-fast": ("autoencoder", dict(AE, skip=True, bow=1.0, patience=0, **FAST), "best"),
    # the fast networks with a wider encoder (bidirectional 128 a direction, 1.20x the tokens/s of
    # SLOW against fast's 1.31x), and their autoencoder: does a wider summary carry more?
    "wide": ("default", dict(V4, **WIDE), "best"),
    "ae-wide": ("autoencoder", dict(AE, skip=True, bow=1.0, patience=0, **WIDE), "best"),
    # the autoencoder of the skip connection's networks, trained for the whole budget: its channel's limit
    "ae-skip": ("autoencoder", dict(AE, skip=True, patience=0), "best"),
    # the autoencoder of skip-bow's networks (skip connection and bag-of-words term), the whole budget
    "ae-skip-bow": ("autoencoder", dict(AE, skip=True, bow=1.0, patience=0), "best"),
}
COLUMNS = ("recipe", "steps", "nll", "nll_refined", "nll_refined_iw", "rec", "kl", "bleu", "content_kept", "exact",
           "sample_lm_nll")
PRIOR_SAMPLES = 200


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


def refined_nll(work, name, iw_samples, limit, steps, iw_steps=0):
    """The test IW-NLL with q(z|x) refined per sentence by ``steps`` SVI steps (evaluate --refine),
    then ``iw_steps`` on its 8-draw IW bound (--refine-iw): the same model's -log p(x), with a better
    proposal than its encoder; cached in the run."""
    out = os.path.join(work, name)
    cached = os.path.join(out, f"recipe-refined-{steps}" + (f"-iw{iw_steps}" if iw_steps else "") + ".json")
    if os.path.isfile(cached):
        return json.load(open(cached))["nll"]
    vae = load(out, device="cpu", which=RECIPES[name][2], warn=lambda m: None)
    if not vae.z_dim:
        return None
    totals = vae.evaluate(vae.split("test", limit=limit), iw_samples, progress=False, refine=steps,
                          refine_iw=iw_steps)["totals"]
    json.dump({"nll": totals["nll"]}, open(cached, "w"))
    return totals["nll"]


def run_recipe(name, data, work, minutes, steps, iw_samples, limit):
    preset, options, which = RECIPES[name]
    out = os.path.join(work, name)
    budget = dict(max_minutes=minutes) if minutes else dict(max_steps=steps, eval_every=max(steps // 2, 1))
    if not os.path.isfile(os.path.join(out, "best.pt")):
        train(config_from(preset, data=data, **{**options, **budget}), out, progress=False, log=lambda m: None)
    cached = os.path.join(out, "recipe-row.json")
    if os.path.isfile(cached):  # evaluated already (delete the file to evaluate again)
        return json.load(open(cached))
    vae = load(out, device="cpu", which=which, warn=lambda m: None)
    test = vae.split("test", limit=limit)
    totals = vae.evaluate(test, iw_samples, progress=False)["totals"]
    metrics = list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))
    row = {"recipe": name, "steps": int(metrics[-1]["step"]), "nll": totals["nll"], "rec": totals.get("rec", totals["nll"]),
           "kl": totals.get("kl", 0.0)}
    if vae.z_dim:
        rec = vae.reconstruction(test)["totals"]
        row.update(bleu=rec["bleu"], content_kept=rec["content_kept"], exact=rec["exact"])
    json.dump(row, open(cached, "w"))
    return row


def sample_quality(work, name):
    """Mean NLL per word (nats), under the corpus's LM recipe, of PRIOR_SAMPLES sentences sampled
    from recipe ``name``'s prior (ancestral decoding, seed 0): lower is more like the corpus."""
    from pyro_svae.data.corpus import encode_sentences

    if not all(os.path.isfile(os.path.join(work, run, "best.pt")) for run in ("lm", name)):
        return None  # no LM to score with, or the run's folder is not kept (a row copied from docs/)
    vae = load(os.path.join(work, name), device="cpu", warn=lambda m: None)
    if not vae.z_dim:
        return None
    lm = load(os.path.join(work, "lm"), device="cpu", warn=lambda m: None)
    pyro.set_rng_seed(0)
    _, texts = vae.sample(PRIOR_SAMPLES, strategy="sample")
    split, _ = encode_sentences([t for t in texts if t.strip()], lm.tokenizer)
    totals = lm.evaluate(split, 1, progress=False)["totals"]
    return totals["nll"] * totals["sentences"] / totals["tokens"]


def update_results(work, row):
    """WORK/results.csv: one row per recipe (a rerun replaces its row); -> every row."""
    path = os.path.join(work, "results.csv")
    rows = [r for r in csv.DictReader(open(path))] if os.path.isfile(path) else []
    rows = [r for r in rows if r["recipe"] != row["recipe"]] + [row] if row else rows
    for r in rows:  # the LM may come after the VAEs: score every prior whose score is missing
        if not r.get("sample_lm_nll"):
            r["sample_lm_nll"] = sample_quality(work, r["recipe"]) or ""
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)
    return rows


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
    p.add_argument("--refine", type=int, default=0,
                   help="Also the test IW-NLL with q refined per sentence by N steps (evaluate --refine N).")
    p.add_argument("--refine-iw", type=int, default=0,
                   help="With --refine: also that NLL with q then refined by M steps on its 8-draw IW bound "
                        "(evaluate --refine N --refine-iw M).")
    args = p.parse_args()
    unknown = [name for name in args.recipes.split(",") if name not in RECIPES]
    if unknown:
        p.error(f"--recipes: unknown {', '.join(unknown)}; use {', '.join(RECIPES)}")
    work = os.path.join(args.work, os.path.basename(args.corpus_dir.rstrip("/")) if args.corpus_dir else args.corpus)
    data = args.corpus_dir or corpus_folder(args.corpus, work)
    print(f"{cpu_name()}; corpus {data}; budget {f'{args.minutes:g} minutes' if args.minutes else f'{args.steps} steps'}")
    for name in args.recipes.split(","):
        row = run_recipe(name, data, work, args.minutes, args.steps, args.iw_samples, args.limit)
        if args.refine:
            row["nll_refined"] = refined_nll(work, name, args.iw_samples, args.limit, args.refine) or ""
            if args.refine_iw:
                row["nll_refined_iw"] = refined_nll(work, name, args.iw_samples, args.limit, args.refine,
                                                    args.refine_iw) or ""
        update_results(work, row)
        print(f"{name}: test NLL {row['nll']:.2f}", flush=True)
    print(f"every recipe of {work} ({work}/results.csv; prior samples scored by its lm run, nats per word):")
    print(table(update_results(work, None)))


def table(rows):
    def cell(r, key, fmt):
        return format(float(r[key]), fmt) if r.get(key) not in (None, "") else "-"

    lines = ["| recipe | steps | test NLL (IW) | NLL, q refined | NLL, q then fitted to the IW bound | rec | KL | BLEU | "
             "content words kept | exact | prior samples' LM NLL/word |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['steps']} | {cell(r, 'nll', '.2f')} | {cell(r, 'nll_refined', '.2f')} | "
                     f"{cell(r, 'nll_refined_iw', '.2f')} | "
                     f"{cell(r, 'rec', '.2f')} | "
                     f"{cell(r, 'kl', '.2f')} | {cell(r, 'bleu', '.3f')} | {cell(r, 'content_kept', '.3f')} | "
                     f"{cell(r, 'exact', '.3f')} | {cell(r, 'sample_lm_nll', '.2f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_script(main)
