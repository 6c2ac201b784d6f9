"""export: a trained run as a portable model folder (safetensors, config, tokenizer, model card)."""

import click

from .options import _log


@click.command()
@click.argument("run", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best.pt (the best validation score) or checkpoint.pt.")
@click.option("--license", "license_", default="other", show_default=True, help="The license named in the model card.")
def export(run, out, checkpoint, license_):
    """Write RUN as a model folder OUT that load() and every command taking a run accept.

    Example: python cli.py export runs/ptb models/ptb-vae
    """
    from ..export import export as write_folder

    folder = write_folder(run, out, checkpoint, license_)
    _log(f"{out}: model.safetensors, config.json, tokenizer.json, README.md (step {folder['step']}, "
         f"format {folder['format']} version {folder['format_version']})")
