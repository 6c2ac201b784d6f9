"""How preparation and training scale with corpus size and processes.

    python bench/scale.py --ptb data/ptb --work /tmp/svae-scale

(a) ``prepare`` on synthetic corpora of 1x, 10x and 100x PTB's training set (PTB training
sentences drawn with replacement; PTB's valid/test): sentences/s and peak resident memory.
(b) training tokens/s and peak resident memory at 1x and 100x (same model, same steps).
(c) training tokens/s with 1 and 2 processes (torchrun, gloo, one thread each), and 1 process
with every thread; with --gpu, one process on CUDA. Tokens are real tokens (</s> counted,
padding not). Each measurement runs in its own process, so peak memory is its own.
The synthetic corpora are written under --work (about 5 MB per 1x); never commit them.
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthesize(ptb, folder, times, seed=0):
    """folder/train.txt: ``times`` x PTB's training size, drawn from its sentences; valid/test: PTB's."""
    if os.path.isfile(os.path.join(folder, "test.txt")):
        return folder
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(ptb, "ptb.train.txt"), encoding="utf-8") as f:
        lines = f.readlines()
    rng = random.Random(seed)
    with open(os.path.join(folder, "train.txt"), "w", encoding="utf-8") as f:
        for _ in range(times):
            f.writelines(rng.choices(lines, k=len(lines)))
    for split in ("valid", "test"):  # test last: its presence marks a complete corpus
        with open(os.path.join(ptb, f"ptb.{split}.txt"), encoding="utf-8") as src, \
                open(os.path.join(folder, f"{split}.txt"), "w", encoding="utf-8") as dst:
            dst.write(src.read())
    return folder


def peak_mb():
    """Peak resident memory of this process and of its waited-for children, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(own, 1), round(children, 1)


# -- measurements, each in its own process --------------------------------------------------

def child_prepare(data, out):
    import shutil

    from pyro_svae.data.store import prepare_store

    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    _, splits, _ = prepare_store(data, out, log=lambda *a: None, progress=False)
    seconds = time.time() - started
    own, workers = peak_mb()
    lines = sum(len(s) for s in splits.values())
    print(json.dumps({"seconds": seconds, "sentences": lines, "sentences_per_s": lines / seconds,
                      "peak_mb": own, "worker_peak_mb": workers}))


def child_train(store, out, steps, device):
    import shutil

    import torch

    from pyro_svae import config_from, train

    if os.environ.get("RANK", "0") == "0":
        shutil.rmtree(out, ignore_errors=True)
    if "RANK" in os.environ:
        import torch.distributed as dist  # the others wait until process 0 has cleared the run

        dist.init_process_group("gloo")
        dist.barrier()
    summary = train(config_from(data=store, max_steps=steps, eval_every=10**9, device=device, seed=0),
                    out, log=lambda *a: None, progress=False)
    if os.environ.get("RANK", "0") == "0":
        own, _ = peak_mb()
        print(json.dumps({"tokens_per_s": summary["tokens"] / summary["train_seconds"], "tokens": summary["tokens"],
                          "steps": summary["step"], "peak_mb": own, "threads": torch.get_num_threads(),
                          "processes": summary["processes"]}))


def run_child(args, env=None, launcher=None):
    cmd = (launcher or [sys.executable]) + [os.path.abspath(__file__), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {}), "PYTHONPATH": ROOT})
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def torchrun(n):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--ptb", default="data/ptb", help="Folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt.")
    p.add_argument("--work", default="/tmp/svae-scale", help="Where the synthetic corpora, stores and runs go.")
    p.add_argument("--sizes", default="1,10,100", help="Corpus sizes for (a), in multiples of PTB's training set.")
    p.add_argument("--train-sizes", default="1,100", help="Corpus sizes for (b); each must be in --sizes.")
    p.add_argument("--steps", type=int, default=100, help="Training steps per measurement (default model, batch 32).")
    p.add_argument("--processes", default="1,2", help="Process counts for (c), on the 1x corpus, one thread each.")
    p.add_argument("--gpu", action="store_true", help="Also train one process on CUDA (c).")
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    from pyro_svae.devices import cpu_name

    if not all(os.path.isfile(os.path.join(args.ptb, f"ptb.{split}.txt")) for split in ("train", "valid", "test")):
        p.error(f"--ptb {args.ptb}: no ptb.train.txt, ptb.valid.txt and ptb.test.txt there (make data writes them)")

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    print(f"# {cpu_name()}, {os.cpu_count()} CPUs; --steps {args.steps}", flush=True)
    for k in sizes:
        data = synthesize(args.ptb, os.path.join(args.work, f"x{k}"), k)
        m = run_child(["_prepare", data, os.path.join(args.work, f"store-x{k}")])
        rows.append(("prepare", f"{k}x", f"{m['sentences']:,} sentences", f"{m['sentences_per_s']:,.0f} sentences/s",
                     f"{m['peak_mb']:.0f} MB" + (f" (workers {m['worker_peak_mb']:.0f} MB each)" if m["worker_peak_mb"] else "")))
        print(*rows[-1], sep=" | ", flush=True)
    for k in [int(s) for s in args.train_sizes.split(",")]:
        m = run_child(["_train", os.path.join(args.work, f"store-x{k}"), os.path.join(args.work, f"run-x{k}"),
                       str(args.steps), "cpu"])
        rows.append(("train, 1 process", f"{k}x", f"{m['threads']} threads", f"{m['tokens_per_s']:,.0f} tokens/s",
                     f"{m['peak_mb']:.0f} MB"))
        print(*rows[-1], sep=" | ", flush=True)
    store = os.path.join(args.work, "store-x1")
    for n in [int(s) for s in args.processes.split(",")]:
        m = run_child(["_train", store, os.path.join(args.work, f"run-p{n}"), str(args.steps), "cpu"],
                      env={"OMP_NUM_THREADS": "1"}, launcher=torchrun(n) if n > 1 else None)
        rows.append((f"train, {n} process{'es' if n > 1 else ''}", "1x", "1 thread each", f"{m['tokens_per_s']:,.0f} tokens/s",
                     f"{m['peak_mb']:.0f} MB (process 0)"))
        print(*rows[-1], sep=" | ", flush=True)
    if args.gpu:
        m = run_child(["_train", store, os.path.join(args.work, "run-gpu"), str(args.steps), "cuda"])
        rows.append(("train, 1 GPU", "1x", "", f"{m['tokens_per_s']:,.0f} tokens/s", f"{m['peak_mb']:.0f} MB host"))
        print(*rows[-1], sep=" | ", flush=True)
    print("\n| measurement | corpus | setting | throughput | peak resident memory |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_prepare":
        child_prepare(*sys.argv[2:4])
    elif len(sys.argv) > 1 and sys.argv[1] == "_train":
        child_train(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
