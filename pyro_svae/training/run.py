"""Starting and resuming a run: ``train(TrainConfig(...), out_dir)`` starts one;
``train(..., resume=True)`` continues it exactly where its checkpoint left it (same batches, same
random draws). Under ``torchrun`` process 0 checks, locks and prepares while the others wait."""

import contextlib
import dataclasses
import datetime
import os
import platform
import shutil

import pyro
import torch

from .. import __version__
from ..checkpoint import remove_temporaries
from ..data.corpus import split_files
from ..data.store import is_store, load_store, prepare_store
from ..data.tokenizers import load_tokenizer
from ..devices import resolve_device
from ..errors import SVAEError
from .config import TrainConfig, check_config, resumed_config, store_options
from .distributed import join, leave
from .loop import sentence_trainer
from .rundir import CHECKPOINT, CONFIG, METRICS, load_corpus, read_config, truncate_metrics, write_config, writer_lock


def prepare_run(c, out_dir, log, progress=True):
    """The run's corpus: a prepared store (``--data STORE``, shared, not copied: its tokenizer
    options become the run's), or raw text encoded into a store inside the run directory.
    Writes the tokenizer and config.json. -> (config, tokenizer, {split: MappedSplit})."""
    if is_store(c.data):
        tokenizer, splits, info = load_store(c.data)
        c = dataclasses.replace(c, **info["options"])
        os.makedirs(out_dir, exist_ok=True)
        for name in ("tokenizer.json", getattr(tokenizer, "model_path", None)):
            if name:
                shutil.copyfile(os.path.join(c.data, os.path.basename(name)), os.path.join(out_dir, os.path.basename(name)))
        log(f"data: the token store {c.data} ({info['options']['tokenizer']}, {len(tokenizer)} ids; "
            + ", ".join(f"{k} {v['sentences']} sentences" for k, v in info["splits"].items()) + ")")
        store = os.path.abspath(c.data)
    else:
        tokenizer, splits, info = prepare_store(c.data, out_dir, store_options(c), log=log, progress=progress)
        store = ""
    write_config(out_dir, {
        "train": dataclasses.asdict(c), "vocab_size": len(tokenizer), "data_sha256": info["data_sha256"],
        "store": store, "counts": info["splits"], "labels": info.get("labels"), "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {"pyro_svae": __version__, "pyro": pyro.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    })
    return c, tokenizer, splits


def train(config=None, out_dir=None, resume=False, overrides=None, log=print, progress=True):
    """Start a run in ``out_dir`` from ``config``, or resume it (``resume=True``; ``overrides``
    may change the budget). Returns the summary of ``Trainer.run``. The process holds the run's
    writer lock throughout (a second writer is refused).

    Under ``torchrun`` every process calls this: process 0 checks, locks and prepares the run
    while the others wait, then all train together (distributed.py)."""
    overrides = overrides or {}
    world, device = join(_requested_device(config, out_dir, resume, overrides))
    try:
        with contextlib.ExitStack() as held:
            failure = None
            if world.main:
                try:
                    _start(config, out_dir, resume, overrides, log, progress, held)
                except SVAEError as e:
                    failure = e
            if world.broadcast(str(failure) if failure else None) is not None:
                if failure:
                    raise failure
                raise SystemExit(1)  # process 0 printed why
            return _run(out_dir, resume, overrides, log, progress, world, device)
    finally:
        leave()


def _requested_device(config, out_dir, resume, overrides):
    if not resume:
        return config.device
    try:
        return overrides.get("device") or read_config(out_dir)["train"].get("device", "auto")
    except SVAEError:
        return "auto"  # process 0 reports what is wrong with the run, once


def _start(config, out_dir, resume, overrides, log, progress, held):
    """Process 0: check everything, take the writer lock (kept in ``held``), prepare a new run."""
    if not resume:
        check_config(config)
        resolve_device(config.device)
        if is_store(config.data):
            load_store(config.data)  # a readable store, before the run directory is created
        else:
            split_files(config.data)  # the corpus is there, before the run directory is created
    else:
        read_config(out_dir)  # a folder that is not a run: one line, and no lock file left in it
    held.enter_context(writer_lock(out_dir))
    removed = remove_temporaries(out_dir)
    if removed:
        log(f"{out_dir}: removed {removed} temporary file(s) left by an interrupted write")
    if resume:
        check_config(resumed_config(out_dir, overrides))
        return
    if os.path.isfile(os.path.join(out_dir, CHECKPOINT)) or os.path.isfile(os.path.join(out_dir, CONFIG)):
        raise SVAEError(f"{out_dir} already holds a run; resume it with --resume {out_dir} or pick another --out")
    prepare_run(config, out_dir, log, progress)


def _run(out_dir, resume, overrides, log, progress, world, device):
    """Every process: build the trainer from the run directory, restore or initialize, train."""
    config = resumed_config(out_dir, overrides) if resume else TrainConfig(**read_config(out_dir)["train"])
    tokenizer, splits = load_tokenizer(out_dir), load_corpus(out_dir)
    trainer = sentence_trainer(config, out_dir, tokenizer, splits, log, progress, world, device)
    if resume:
        path = os.path.join(out_dir, CHECKPOINT)
        if os.path.isfile(path):
            trainer.restore(path)
        else:  # stopped after preparing the corpus, before the first checkpoint: start over
            trainer.log(f"{out_dir} has no {CHECKPOINT} yet; training from step 0")
        if world.main:
            truncate_metrics(os.path.join(out_dir, METRICS), trainer.pos.step)
        trainer.log(f"resuming {out_dir} at step {trainer.pos.step}"
                    + (f" with {world.size} processes" if world.distributed else ""))
    else:
        if config.init_decoder:
            trainer.family.init_decoder(config.init_decoder, tokenizer, trainer.log)
        if config.init_from:
            trainer.family.init_from(config.init_from, tokenizer, trainer.log)
        if world.distributed:
            trainer.log(f"training with {world.size} processes ({torch.distributed.get_backend()}), "
                        f"{config.batch_size} sentences per step in all")
    return trainer.run()
