"""PTB benchmark: train the LSTM language model and the sentence VAE on the same decoder, evaluate
them on the test split, and write the results table (markdown + JSON). Rows: lm (the baseline),
vae (from scratch) and, on request, vae-lm (the VAE whose decoder starts as the trained lm row:
train --init-decoder) and vae-iw (the vae row fine-tuned on the importance-weighted bound with K = 5
and a KL floor: train --init-from --iw-particles 5 --free-bits 0.2).

    python bench/ptb.py                                     # 30 epochs each, early stopping (GPU)
    python bench/ptb.py --minutes 30 --eval-amp bf16        # a CPU budget (the README says what ran)
    python bench/ptb.py --models lm,vae,vae-lm --warm-minutes 20
    python bench/ptb.py --models lm,vae,vae-iw --minutes 30 --warm-minutes 30 --eval-amp bf16
    python bench/ptb.py --models lm,vae --minutes 30 --eval-amp bf16 --refine 100 [--widen 1.15]   # + refined q

Each row records its command, wall-clock time and hardware. A run with a best.pt is not trained
again, and a stored evaluation with the same K and precision is reused, so rows can be added or
redone one at a time (--models). Long: run it in the background or on a GPU machine, never in the
tests."""

import argparse
import csv
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pyro_svae.errors import run_script  # noqa: E402
from pyro_svae import TrainConfig, load, train  # noqa: E402
from pyro_svae.devices import cpu_name, resolve_device  # noqa: E402
from pyro_svae.training.rundir import read_config  # noqa: E402
from pyro_svae.training.config import RESUMABLE  # noqa: E402

# Shared decoder: a 650-unit LSTM with tied input/output embeddings and dropout 0.5 (Zaremba et al.'s
# medium size; Bowman et al.'s 191 units plateau near PPL 129). The VAE adds a 256-unit LSTM encoder
# (cheap next to the decoder), a 32-d latent and free bits. bf16 autocast: tensor cores on CUDA, AMX
# on recent Xeons (on CPUs with neither, pass --amp off).
COMMON = dict(emb_dim=650, hidden=650, tie=True, dropout=0.5, batch_size=64, lr=2e-3, lr_decay=0.5,
              eval_every=500, max_len=100, word_keep=1.0, bidirectional=False, feed_z=False)
VAE = dict(model="vae", z_dim=32, enc_hidden=256, free_bits=0.25, kl_schedule="linear:0,2000", skip=False, bow=0.0)
MODELS = {
    "lm": dict(model="lm", kl_schedule="constant"),
    "vae": VAE,
    # the VAE whose decoder starts as the trained LM (train --init-decoder), at a lower learning rate
    "vae-lm": {**VAE, "lr": 5e-4, "init_decoder": "{out}/lm"},
    # the trained vae row, fine-tuned on the K = 5 importance-weighted bound, which targets log p(x)
    # itself; best.pt is chosen by the same bound on validation. beta = 1; a lower KL floor than the
    # vae row's keeps the latent in use (without one, KL falls from 7 to 2 nats in 250 steps)
    "vae-iw": {**VAE, "free_bits": 0.2, "kl_schedule": "constant", "iw_particles": 5, "lr": 5e-4,
               "eval_every": 250, "init_from": "{out}/vae"},
}


def hardware(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def flags(options):
    flag = lambda k, v: (f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k} {v}"  # noqa: E731
    return " ".join(flag(k.replace("_", "-"), v) for k, v in options.items())


def trained_minutes(run):
    """Training wall-clock minutes, from the run's metrics.csv (its last row)."""
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return round(float(rows[-1]["minutes"]), 1) if rows else 0.0


def ensure_trained(run, args, options, device):
    """Train ``run`` unless it has a best.pt (then its settings must be ``options``)."""
    if not os.path.isfile(os.path.join(run, "best.pt")):
        train(TrainConfig(data=args.data, device=str(device), **options), run)
        return
    trained = read_config(run)
    trained = trained.get("train", trained)
    differ = sorted(k for k, v in options.items() if k not in RESUMABLE and trained.get(k, v) != v)
    if differ:
        sys.exit(f"error: {run} was trained with other settings ({', '.join(differ)}): "
                 "remove it or choose another --out")


def row(name, run, args, options, device, refine=0):
    """Evaluate the trained ``run`` on test (q refined by ``refine`` steps and widened by
    --widen) unless it holds this very evaluation (bench.json, bench-refine<N>[-widen<S>].json),
    -> the table row."""
    widen = args.widen if refine else 1.0
    proposal = {**({"refine": refine} if refine else {}), **({"widen": widen} if widen != 1 else {})}
    stored = os.path.join(run, "bench" + "".join(f"-{k}{v:g}" for k, v in proposal.items()) + ".json")
    evaluation = {"iw_samples": args.iw_samples, "eval_amp": args.eval_amp, **proposal}
    if os.path.isfile(stored):
        with open(stored) as f:
            result = json.load(f)
        if {k: result.get(k) for k in evaluation} == evaluation:
            return result
    started = time.time()
    totals = load(run, device=str(device)).evaluate("test", samples=args.iw_samples, amp=args.eval_amp,
                                                    chunk=args.chunk, refine=refine, widen=widen)["totals"]
    extra = f" --amp {args.eval_amp}" if args.eval_amp != "off" else ""
    extra += f" --chunk {args.chunk}" if args.chunk != 50 else ""
    extra += "".join(f" --{k} {v:g}" for k, v in proposal.items())
    label = f", q refined ({refine} steps{f', widened x{widen:g}' if widen != 1 else ''})" if refine else ""
    result = {"model": name + label, "run": run, **evaluation,
              "train_command": f"python cli.py train --data {args.data} --out {run} {flags(options)}",
              "eval_command": f"python cli.py evaluate {run} --split test --iw-samples {args.iw_samples}{extra}",
              "train_minutes": trained_minutes(run), "eval_minutes": round((time.time() - started) / 60, 1),
              "hardware": hardware(device), **totals}
    with open(stored, "w") as f:
        json.dump(result, f, indent=1)
    return result


def table(results):
    lines = ["| model | test NLL (nats/sent.) | which bound | PPL | ELBO | KL | MI | AU | train | evaluate | hardware |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lm = r["model"] == "lm"
        bound = "exact" if lm else f"IW, K={r['iw_samples']}" + (", refined q" if r.get("refine") else "")
        bound += f" x{r['widen']:g}" if r.get("widen") else ""
        bound += ", bf16 decoder" if r["eval_amp"] == "bf16" else ""
        lines.append(f"| {r['model']} | {r['nll']:.2f} | {bound} | {r['ppl_iw']:.1f} | "
                     f"{'= NLL' if lm else '%.2f' % r['elbo']} | {r['kl']:.2f} | "
                     f"{'-' if lm else '%.2f' % r['mutual_information']} | {'-' if lm else r['active_units']} | "
                     f"{r['train_minutes']} min | {r['eval_minutes']} min | {r['hardware']} |")
    commands = [f"- {r['model']}: `{r['train_command']}`; `{r['eval_command']}`" for r in results]
    return "\n".join(lines) + "\n\n" + "\n".join(commands) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/ptb", help="folder with ptb.{train,valid,test}.txt")
    parser.add_argument("--out", default="runs/bench-ptb", help="folder for the runs and the results")
    parser.add_argument("--minutes", type=float, default=0, help="training budget per model (0: --epochs)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per model when no --minutes")
    parser.add_argument("--warm-minutes", type=float, default=0,
                        help="budget of the warm-started rows, vae-lm and vae-iw (0: as the others)")
    parser.add_argument("--patience", type=int, default=4, help="early stopping, in evaluations")
    parser.add_argument("--iw-samples", type=int, default=500, help="K for the test IW-NLL")
    parser.add_argument("--models", default="lm,vae",
                        help="which rows, in order: lm, vae (from scratch), vae-lm (decoder from the lm row), "
                             "vae-iw (the vae row fine-tuned on the IW bound)")
    parser.add_argument("--refine", type=int, default=0,
                        help="N > 0: also score every VAE row with q(z|x) refined per sentence by N SVI steps "
                             "(evaluate --refine N), a tighter IW estimate of the same model's NLL")
    parser.add_argument("--widen", type=float, default=1.0,
                        help="with --refine: draw from the refined q with its standard deviations times this "
                             "(evaluate --widen)")
    parser.add_argument("--chunk", type=int, default=50, help="IW draws folded into the batch at a time")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", default="bf16", choices=["off", "bf16"], help="mixed precision for training")
    parser.add_argument("--eval-amp", default="off", choices=["off", "bf16"],
                        help="bf16: the decoder in bfloat16 during evaluation (densities stay float32)")
    parser.add_argument("--seed", type=int, default=0, help="one seed for every run")
    args = parser.parse_args()
    if not os.path.isdir(args.data):
        parser.error(f"--data {args.data}: no such folder (make data prepares data/ptb)")
    unknown = [name for name in args.models.split(",") if name not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; use {', '.join(MODELS)}")
    device = resolve_device(args.device)
    budget = {"max_minutes": args.minutes} if args.minutes else {"max_epochs": args.epochs}
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name in args.models.split(","):
        options = {**COMMON, **MODELS[name], **budget, "patience": args.patience, "seed": args.seed,
                   "amp": args.amp}
        for warm in ("init_decoder", "init_from"):
            if warm in options:
                options[warm] = options[warm].format(out=args.out)
                if args.warm_minutes:
                    options["max_minutes"] = args.warm_minutes
        run = os.path.join(args.out, name)
        ensure_trained(run, args, options, device)
        for refine in (0, args.refine) if args.refine and name != "lm" else (0,):
            results.append(row(name, run, args, options, device, refine))
            print(json.dumps(results[-1], indent=1))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table(results))
    print(table(results))


if __name__ == "__main__":
    run_script(main)
