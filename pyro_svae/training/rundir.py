"""A run directory: config.json, tokenizer, the token store (SPLIT.tokens/.offsets and store.json,
unless the run reads a prepared store; corpus.pt in runs of version 0.1), checkpoint.pt, best.pt,
metrics.csv, and .lock (held by the one process that trains into it). This module reads and
writes them and rebuilds a trained model."""

import contextlib
import csv
import fcntl
import io
import json
import os
import socket

import torch

from ..checkpoint import atomic_write_bytes, load_checkpoint
from ..data.corpus import EncodedSplit
from ..errors import SVAEError
from ..models.vae import ModelConfig, SentenceVAE
from ..models.documents import ChainVAE, is_chain_prior
from ..models.labeled import LabeledVAE, is_class_prior, parse_classes
from ..data.store import STORE, is_store, open_store, read_store_info
from ..data.tokenizers import load_tokenizer, vocab_hash
from .averaging import copy_weights

CONFIG, CHECKPOINT, BEST, CORPUS, METRICS, LOCK = (
    "config.json", "checkpoint.pt", "best.pt", "corpus.pt", "metrics.csv", ".lock")


@contextlib.contextmanager
def writer_lock(run_dir):
    """Hold the run's exclusive writer lock (``flock`` on RUN/.lock, which records PID and host).
    A second writer gets a one-line error naming the holder. The OS releases the lock when its
    process dies, even by kill -9, so a stale lock never blocks the next resume."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            who = f"process {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
            raise SVAEError(f"{run_dir} is being trained by {who}; wait for it to finish or stop it "
                            "(one writer per run directory)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_config(run_dir):
    path = os.path.join(run_dir, CONFIG)
    if not os.path.isfile(path):
        raise SVAEError(f"{run_dir}: not a pyro-svae run (no {CONFIG})")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise SVAEError(f"{path}: unreadable ({e.__class__.__name__})") from None


def write_config(run_dir, config):
    atomic_write_bytes(os.path.join(run_dir, CONFIG), json.dumps(config, indent=1).encode())


def model_config(config, vocab_size):
    fields = ModelConfig.__dataclass_fields__
    values = {k: v for k, v in config["train"].items() if k in fields and k != "vocab_size"}
    if config["train"].get("model") == "lm":
        values["z_dim"] = 0
    return ModelConfig(vocab_size=vocab_size, **values)


def load_corpus(run_dir):
    """{split: encoded split} of a run: its own token store, the prepared store it was trained
    from, or (runs of version 0.1) corpus.pt."""
    if is_store(run_dir):
        return open_store(run_dir)
    store = read_config(run_dir).get("store")
    if store:
        if not is_store(store):
            raise SVAEError(f"{run_dir}: its token store {store} is gone; prepare it again there "
                            f"(python cli.py prepare --data CORPUS --out {store})")
        if read_store_info(store)["vocab_hash"] != vocab_hash(load_tokenizer(run_dir)):
            raise SVAEError(f"{run_dir}: the token store {store} now holds another vocabulary than the run's")
        return open_store(store)
    path = os.path.join(run_dir, CORPUS)
    if not os.path.isfile(path):
        raise SVAEError(f"{run_dir}: the run has no corpus (no {STORE} or {CORPUS})")
    state = torch.load(path, weights_only=True)
    return {name: EncodedSplit(s["tokens"], s["offsets"]) for name, s in state["splits"].items()}


def restore_model(svae, state, tokenizer, path):
    """Load ``state['model']`` into ``svae``; one-line errors for another vocabulary or size."""
    if state.get("vocab_hash") != vocab_hash(tokenizer):
        raise SVAEError(f"{path}: checkpoint from another vocabulary than this run's tokenizer")
    try:
        svae.load_state_dict(state["model"])
    except RuntimeError:
        raise SVAEError(f"{path}: checkpoint from another model size or architecture") from None


def load_run(run_dir, device="cpu", which="best"):
    """-> (SentenceVAE in eval mode on ``device``, tokenizer, config). which: 'best' or 'last'."""
    config = read_config(run_dir)
    tokenizer = load_tokenizer(run_dir)
    path = os.path.join(run_dir, BEST if which == "best" else CHECKPOINT)
    if not os.path.isfile(path):
        path, which = os.path.join(run_dir, CHECKPOINT), "last"
    other = os.path.join(run_dir, CHECKPOINT if which == "best" else BEST)
    hint = (f"; try --checkpoint {'last' if which == 'best' else 'best'} ({os.path.basename(other)})"
            if os.path.isfile(other) else "")
    state = load_checkpoint(path, device, hint)
    svae = build_model(config, len(tokenizer)).to(device)
    restore_model(svae, state, tokenizer, path)
    if "ema" in state:  # checkpoint.pt of an --ema run: the average, the weights its validation scored
        copy_weights(svae, state["ema"]["average"])
    return svae.eval(), tokenizer, config


def build_model(config, vocab_size):
    """The untrained network of a run's ``config`` (config.json's contents): a SentenceVAE, or with
    ``--prior class`` a LabeledVAE over the run's label names."""
    train = config["train"]
    if is_chain_prior(train.get("prior", "")):
        return ChainVAE(model_config(config, vocab_size))
    if is_class_prior(train.get("prior", "")):
        classes = parse_classes(train["prior"], config.get("labels"))
        return LabeledVAE(model_config(config, vocab_size), classes, train.get("alpha", 0.0))
    return SentenceVAE(model_config(config, vocab_size))


def append_metrics(path, row):
    new = not os.path.isfile(path)
    try:
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise SVAEError(f"{path}: could not be written ({e.strerror or e})") from None


def truncate_metrics(path, step):
    """Drop rows written after ``step`` (they belong to a run that continued past the checkpoint)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and any(int(r["step"]) > step for r in rows):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= step)
        atomic_write_bytes(path, out.getvalue().encode())
