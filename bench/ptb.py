"""PTB benchmark: train the LSTM language model and the sentence VAE on the same decoder, evaluate
both on the test split, and write the results table (markdown + JSON).

    python bench/ptb.py                                   # the full run (GPU recommended)
    python bench/ptb.py --minutes 30 --iw-samples 100     # a CPU budget

Each row records its command, wall-clock time and hardware. Long: run it in the background or on
a GPU machine, never in the tests."""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pyro_svae import TrainConfig, load, train  # noqa: E402
from pyro_svae.devices import resolve_device  # noqa: E402

# Shared decoder: Bowman et al.'s sizes. The VAE adds an encoder, a 32-d latent and free bits.
COMMON = dict(emb_dim=353, hidden=191, batch_size=32, lr=2e-3, lr_decay=0.5, dropout=0.2, eval_every=1000,
              max_len=100, word_keep=1.0)
MODELS = {
    "lm": dict(model="lm", kl_schedule="constant"),
    "vae": dict(model="vae", z_dim=32, free_bits=0.25, kl_schedule="linear:0,4000"),
}


def hardware(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def flags(options):
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/ptb", help="folder with ptb.{train,valid,test}.txt")
    parser.add_argument("--out", default="runs/bench-ptb", help="folder for the two runs and the results")
    parser.add_argument("--minutes", type=float, default=0, help="training budget per model (0: --epochs)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs per model when no --minutes")
    parser.add_argument("--patience", type=int, default=4, help="early stopping, in evaluations")
    parser.add_argument("--iw-samples", type=int, default=500, help="K for the test IW-NLL")
    parser.add_argument("--models", default="lm,vae", help="which rows to run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = resolve_device(args.device)
    budget = {"max_minutes": args.minutes} if args.minutes else {"max_epochs": args.epochs}
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name in args.models.split(","):
        options = {**COMMON, **MODELS[name], **budget, "patience": args.patience, "seed": args.seed}
        run = os.path.join(args.out, name)
        command = f"python cli.py train --data {args.data} --out {run} {flags(options)}"
        started = time.time()
        if not os.path.isfile(os.path.join(run, "best.pt")):
            train(TrainConfig(data=args.data, device=str(device), **options), run)
        train_minutes = (time.time() - started) / 60
        started = time.time()
        vae = load(run, device=str(device))
        totals = vae.evaluate("test", samples=args.iw_samples)["totals"]
        results.append({"model": name, "run": run, "train_command": command,
                        "eval_command": f"python cli.py evaluate {run} --split test --iw-samples {args.iw_samples}",
                        "train_minutes": round(train_minutes, 1), "eval_minutes": round((time.time() - started) / 60, 1),
                        "hardware": hardware(device), **totals})
        print(json.dumps(results[-1], indent=1))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    table = ["| model | test NLL (nats/sent.) | bound | PPL | KL | MI | AU | train | hardware |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lm = r["model"] == "lm"
        table.append(f"| {r['model']} | {r['nll']:.2f} | {'exact' if lm else 'IW, K=%d' % r['iw_samples']} | "
                     f"{r['ppl_iw']:.1f} | {r['kl']:.2f} | {'-' if lm else '%.2f' % r['mutual_information']} | "
                     f"{'-' if lm else r['active_units']} | {r['train_minutes']} min | {r['hardware']} |")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(table) + "\n\n" + "\n".join(f"- {r['model']}: `{r['train_command']}`; `{r['eval_command']}`"
                                                    for r in results) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
