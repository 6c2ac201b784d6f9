"""The options that several commands share, and the helpers that print their results."""

import functools
import json

import click

from ...errors import SVAEError
from ...training.config import OPTIONS


def _train_option(o):
    flag = o.flag
    if isinstance(o.default, bool):
        return click.option(f"{flag}/--no-{flag[2:]}", o.name, default=None,
                            help=f"{o.help} [default: {'yes' if o.default else 'no'}]")
    kind = click.Choice(o.choices) if o.choices else type(o.default)
    shown = f" [default: {o.default}]" if o.default != "" else ""
    return click.option(flag, o.name, type=kind, default=None, help=o.help + shown)


def train_options(f, names=None):
    """The train options named (default: all of them), as click options defaulting to None."""
    for o in reversed(OPTIONS):
        if names is None or o.name in names:
            f = _train_option(o)(f)
    return f


def decoding_options(unk):
    """The decoding options; ``unk``: whether this command lets the search emit <unk> by default
    (yes where the output should show what the model reads, as in reconstructions; no where it is
    for display, as in samples)."""
    return functools.partial(_decoding_options, unk=unk)


def _decoding_options(f, unk):
    options = [
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option("--decode", "strategy", type=click.Choice(["greedy", "sample", "beam"]), default="greedy",
                     show_default=True, help="How to decode each z."),
        click.option("--beam", type=int, default=5, show_default=True, help="Beam width (--decode beam)."),
        click.option("--length-penalty", type=float, default=1.0, show_default=True,
                     help="Beam: rank by log-prob / length^this (0: raw log-prob)."),
        click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature."),
        click.option("--top-k", type=int, default=0, show_default=True, help="Sample from the k likeliest words (0: all)."),
        click.option("--max-len", type=int, default=None, help="Maximum tokens decoded [default: the run's --max-len + 1]."),
        click.option("--unk/--no-unk", default=unk, show_default=True,
                     help="Whether the decoded sentences may contain <unk> (--no-unk: the likeliest real word instead)."),
        click.option("--rerank", is_flag=True,
                     help="Beam: choose the candidate x' that best explains z both ways, log p(x'|z) + log q(z|x') "
                          "(the run's encoder), over length^--length-penalty."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON (with the z of each sentence)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
                     help="best.pt (best validation ELBO) or checkpoint.pt."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _explorer(run, device, checkpoint, seed):
    import pyro
    from ..trained import load

    pyro.set_rng_seed(seed)
    return load(run, device=device, which=checkpoint, warn=lambda m: _log(f"warning: {m}"))


def _search(o):
    kw = {"strategy": o["strategy"], "max_len": o["max_len"], "unk": o["unk"]}
    if o["rerank"]:
        kw["rerank"] = True  # make_strategy: only with --decode beam
    if o["strategy"] == "beam":
        kw.update(beam=o["beam"], length_penalty=o["length_penalty"])
    if o["strategy"] == "sample":
        kw.update(temperature=o["temperature"], top_k=o["top_k"])
    if o["max_len"] is not None and o["max_len"] < 1:
        raise SVAEError("--max-len must be at least 1")
    return kw


class Emitter:
    """Prints rows as they come (memory flat in their number): one sentence a line, prefixed by the
    row's 'label' if any, or one JSON array written an element at a time."""

    def __init__(self, as_json):
        self.as_json, self.count = as_json, 0

    def __enter__(self):
        return self

    def write(self, rows):
        for row in rows:
            if self.as_json:
                item = json.dumps({k: v for k, v in row.items() if k != "label"})
                click.echo(("[\n " if self.count == 0 else ",\n ") + item, nl=False)
            else:
                click.echo((f"{row['label']}\t" if "label" in row else "") + row["text"])
            self.count += 1

    def __exit__(self, kind, value, tb):
        if self.as_json and kind is None:
            click.echo("\n]" if self.count else "[]")


def _rows(z, texts, **columns):
    rows = []
    for i, text in enumerate(texts):
        row = {k: v[i] for k, v in columns.items()}
        row["text"] = text
        if z is not None:
            row["z"] = [round(float(x), 5) for x in z[i]]
        rows.append(row)
    return rows


def _read_sentences(sentences, input_file):
    from ...data.corpus import read_sentences

    sentences = list(sentences)
    if input_file:
        lines, stats = read_sentences(input_file)
        if stats.undecodable:
            raise SVAEError(f"{input_file}: line {stats.undecodable[0]} is not UTF-8")
        sentences += lines
    if not sentences:
        raise SVAEError("no sentence given (pass sentences as arguments or --input FILE)")
    return sentences


def _log(message):
    click.echo(message, err=True)
