"""A portable model folder, as the Hugging Face hub lays one out: model.safetensors (the weights,
no pickled code), config.json (the model's configuration, the format and the package version that
wrote it), tokenizer.json (and a sentencepiece model) and README.md, a model card with YAML metadata.

    export("runs/ptb", "models/ptb-vae")       # cli.py export runs/ptb models/ptb-vae
    vae = pyro_svae.load("models/ptb-vae")     # or a hub id "user/name" with huggingface_hub

A folder of another format version, or whose weights do not match their recorded checksum, is a
one-line SVAEError."""

import csv
import json
import os
import shutil

from .. import __version__
from ..checkpoint import atomic_write_bytes, file_sha256, load_checkpoint
from ..data.tokenizers import load_tokenizer, vocab_hash
from ..errors import SVAEError
from ..training.config import OPTIONS
from ..training.rundir import BEST, CHECKPOINT, METRICS, build_model, read_config

FORMAT, FORMAT_VERSION = "pyro-svae-model", 1
WEIGHTS, CONFIG, TOKENIZER, CARD = "model.safetensors", "config.json", "tokenizer.json", "README.md"


def is_model_folder(path):
    return os.path.isfile(os.path.join(path, WEIGHTS))


def resolve(path):
    """A local run or model folder as given; else a hub id ("user/name") fetched by huggingface_hub."""
    if os.path.exists(path) or path.count("/") != 1 or path.startswith((".", "/")):
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SVAEError(f"{path}: no such run or model folder (a hub id needs pip install 'pyro-svae[hub]')") from None
    try:
        return snapshot_download(repo_id=path)
    except Exception as e:  # the hub's errors: offline, not found, ...
        raise SVAEError(f"{path}: not found locally, and the hub could not give it ({e.__class__.__name__})") from None


def export(run_dir, out_dir, which="best", license="other"):
    """Write the model folder of ``run_dir`` (its best.pt, or checkpoint.pt with which='last') to
    ``out_dir``. -> the folder's config (a dict)."""
    from safetensors.torch import save

    config, tokenizer = read_config(run_dir), load_tokenizer(run_dir)
    path = os.path.join(run_dir, BEST if which == "best" else CHECKPOINT)
    state = load_checkpoint(path)
    os.makedirs(out_dir, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    atomic_write_bytes(os.path.join(out_dir, WEIGHTS), save(weights, metadata=metadata))
    tokenizer.save(out_dir)
    if getattr(tokenizer, "model_path", None):
        shutil.copyfile(tokenizer.model_path, os.path.join(out_dir, os.path.basename(tokenizer.model_path)))
    metrics = _metrics(run_dir, state["position"]["step"])
    folder = {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
              "train": config["train"], "vocab_hash": vocab_hash(tokenizer), "step": state["position"]["step"],
              "checkpoint": which, "weights_sha256": file_sha256(os.path.join(out_dir, WEIGHTS)),
              "metrics": metrics, "license": license, "labels": config.get("labels")}
    atomic_write_bytes(os.path.join(out_dir, CONFIG), json.dumps(folder, indent=1).encode())
    atomic_write_bytes(os.path.join(out_dir, CARD), model_card(folder, out_dir).encode())
    return folder


def load_folder(path, device="cpu"):
    """-> (SentenceVAE in eval mode, tokenizer, config) of a model folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = _read_folder_config(path)
    tokenizer = load_tokenizer(path)
    if config.get("vocab_hash") != vocab_hash(tokenizer):
        raise SVAEError(f"{path}: {TOKENIZER} is not the vocabulary the weights were trained on")
    weights = os.path.join(path, WEIGHTS)
    if file_sha256(weights) != config.get("weights_sha256"):
        raise SVAEError(f"{weights}: damaged (its checksum differs from {CONFIG}'s); export the run again")
    try:
        state = load_file(weights, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise SVAEError(f"{weights}: not readable safetensors ({e.__class__.__name__})") from None
    svae = build_model(config, len(tokenizer)).to(device)
    try:
        svae.load_state_dict(state)
    except RuntimeError:
        raise SVAEError(f"{weights}: weights of another model size or architecture than {CONFIG}'s") from None
    return svae.eval(), tokenizer, config


def _read_folder_config(path):
    try:
        with open(os.path.join(path, CONFIG), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise SVAEError(f"{path}: no readable {CONFIG} ({e.__class__.__name__})") from None
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise SVAEError(f"{path}: a model folder of format {config.get('format')!r} version "
                        f"{config.get('format_version')!r}; this pyro-svae {__version__} reads {FORMAT} "
                        f"version {FORMAT_VERSION}")
    return config


def _metrics(run_dir, step):
    """The validation row of metrics.csv at the exported step."""
    out = {}
    path = os.path.join(run_dir, METRICS)
    if os.path.isfile(path):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) == step]
        if rows:
            out["validation"] = {k: float(v) for k, v in rows[-1].items() if k.startswith("val_") and v != ""}
    return out


def training_command(train):
    """The train command line that gives this configuration (the options that differ from the defaults)."""
    parts = ["python cli.py train"]
    for o in OPTIONS:
        value = train.get(o.name, o.default)
        if value != o.default and o.name != "device":
            parts.append(o.flag if value is True else f"--no-{o.flag[2:]}" if value is False else f"{o.flag} {value}")
    return " ".join(parts + ["--out RUN"])


def model_card(folder, out_dir):
    train, val = folder["train"], folder["metrics"].get("validation", {})
    data = os.path.basename(os.path.normpath(train.get("data", ""))) or "unknown"
    kind = "language model (no latent)" if train.get("model") == "lm" else f"sentence VAE, {train['z_dim']}-d latent"
    metrics = "".join(f"- name: {k}\n  value: {v}\n" for k, v in val.items())
    yaml = (f"---\nlibrary_name: pyro-svae\nlicense: {folder['license']}\ntags:\n- pyro\n- vae\n- text\n"
            f"datasets:\n- {data}\nmetrics:\n{metrics or '[]'}\n---\n")
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in val.items())
    return f"""{yaml}
# {os.path.basename(os.path.normpath(out_dir))}

A {kind} (Bowman et al. 2015) trained with pyro-svae {folder['package_version']}:
{train.get('emb_dim')}-d embeddings, a {train.get('hidden')}-unit LSTM decoder, guide `{train.get('guide')}`,
prior `{train.get('prior')}`, at most {train.get('max_len')} tokens per training sentence.

## Training data

`{train.get('data')}` ({train.get('tokenizer')} tokenizer, vocabulary {train.get('vocab_size')}).

## Training command

```sh
{training_command(train)}
```

## Metrics

Validation, at step {folder['step']} (the {folder['checkpoint']} checkpoint); nats per sentence:

| metric | value |
|---|---|
{table}

## Use

```python
import pyro_svae
vae = pyro_svae.load("{out_dir}")
z, texts = vae.sample(5, strategy="beam")
```

or `python cli.py sample {out_dir} -n 5`: every command that takes a run takes this folder.
"""
