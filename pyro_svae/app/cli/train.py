"""train, prepare and compare-guides."""

import functools
import os
import sys

import click

from ...errors import SVAEError
from ...training.config import STORE_OPTIONS, config_from
from .options import _log, train_options


@click.command()
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--resume", type=click.Path(), help="Continue the run in this directory (budget options may change).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@train_options
def train(out, resume, quiet, **options):
    """Train a sentence VAE (or the LM baseline) with SVI.

    Example: python cli.py train --data data/ptb --out runs/ptb --max-minutes 30
    """
    from ...training.run import train as run_training

    from ...training.config import check_store_options

    given = {k: v for k, v in options.items() if v is not None}
    if resume:
        summary = run_training(out_dir=resume, resume=True, overrides=given, progress=not quiet, log=_log)
    else:
        if not out or not given.get("data"):
            raise click.UsageError("train needs --data and --out (or --resume RUN)")
        check_store_options(given["data"], given)
        summary = run_training(config_from(**given), out, progress=not quiet, log=_log)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, process 0 reports
        sys.exit(130 if summary["stopped"] == "interrupted" else 0)
    run, world = summary["run"], int(os.environ.get("WORLD_SIZE", "1"))
    again = f"torchrun --nproc_per_node {world} cli.py" if world > 1 else "python cli.py"
    _log(f"stopped ({summary['stopped']}) at step {summary['step']}, epoch {summary['epoch']}; "
         f"best validation {summary['selected_by'].upper()} "
         f"{summary['best_elbo']:.{2 if summary['selected_by'] == 'elbo' else 4}f}")
    steps, seconds = len(summary["losses"]), max(summary["train_seconds"], 1e-9)
    if steps:
        _log(f"trained {steps} steps in {seconds:.0f} s without validation: {steps / seconds:.2f} steps/s, "
             f"{summary['tokens'] / seconds:,.0f} real tokens/s")
    _log(f"run: {run}  (metrics.csv, checkpoint.pt, best.pt); resume with: {again} train --resume {run}")
    if summary["stopped"] == "interrupted":
        sys.exit(130)


@click.command()
@click.option("--data", required=True, help="Text corpus: a folder with train/valid/test files, or one file split 90/5/5.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the token store to write.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Encoding processes (0: one per CPU for corpora over 16 MB, else one).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@functools.partial(train_options, names=STORE_OPTIONS)
def prepare(data, out, workers, quiet, **options):
    """Encode a text corpus once into a token store (memory-mapped; for corpora larger than memory).

    Train on it with train --data STORE; several runs can share one store.

    Example: python cli.py prepare --data data/ptb --out stores/ptb
    """
    from ...data.store import StoreOptions, is_store, prepare_store
    from ...training.config import TrainConfig, check_config

    options = StoreOptions(**{k: v for k, v in options.items() if v is not None})
    check_config(TrainConfig(**vars(options)))
    if workers < 0:
        raise SVAEError(f"--workers {workers}: must be >= 0")
    if is_store(out):
        raise SVAEError(f"{out} already holds a token store; remove it or pick another --out")
    _, splits, _ = prepare_store(data, out, options, workers, log=_log, progress=not quiet)
    _log(f"store: {out}  ({', '.join(f'{k} {len(v)}' for k, v in splits.items())} sentences); "
         f"train with: python cli.py train --data {out} --out RUN")


@click.command("compare-guides")
@click.option("--guides", default=None,
              help="Comma-separated guide specs [default: diag,lowrank:4,fullrank,iaf:2,delta; "
                   "with --prior hier: hier-meanfield,hier-structured].")
@click.option("--budget", type=float, default=10.0, show_default=True, help="Training minutes per guide.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/compare-guides", show_default=True)
@click.option("--iw-samples", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@train_options
def compare_guides(guides, budget, out_dir, iw_samples, split, quiet, **options):
    """Train the same model with each guide under one budget and seed; write results.md and results.png.

    Example: python cli.py compare-guides --data data/ptb --guides diag,lowrank:4,fullrank,iaf:2,delta --budget 10
    """
    from ..compare import compare_guides as run_comparison

    given = {k: v for k, v in options.items() if v is not None}
    if "guide" in given:
        raise click.UsageError("use --guides (several) with compare-guides")
    if not given.get("data"):
        raise click.UsageError("compare-guides needs --data")
    hier, chain = given.get("prior") == "hier", given.get("prior") == "chain"
    default = ("hier-meanfield,hier-structured" if hier else "doc-meanfield,doc-structured,doc-conjugate" if chain
               else "diag,lowrank:4,fullrank,iaf:2,delta")
    specs = [g.strip() for g in (guides or default).split(",") if g.strip()]
    config = config_from(**{"max_minutes": budget, **given})
    rows, plotted = run_comparison(config, specs, out_dir, iw_samples, split, log=_log, progress=not quiet)
    click.echo(open(os.path.join(out_dir, "results.md")).read().rstrip())
    click.echo(f"table: {out_dir}/results.md" + (f"; plot: {out_dir}/results.png" if plotted else
                                                 " (no plot: pip install matplotlib)"))
