"""pyro-svae command line: prepare, train, sample, reconstruct, posterior, homotopy, evaluate, impute, serve, ...

Every command is a thin layer over the Python API in ``pyro_svae``. Errors in the input are
reported on one line with a non-zero exit status."""

import os
import sys

import click

from ...errors import SVAEError
from ...training.distributed import several_processes
from . import analyze, classes, decode, documents, serve, share, train

@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pyro-svae")
def cli():
    """Sentence VAEs in Pyro (Bowman et al. 2015): train, decode and interpolate, evaluate, impute,
    and compare variational families."""


for command in (train.train, train.prepare, decode.sample, decode.reconstruct, decode.posterior, decode.homotopy,
                analyze.evaluate, analyze.impute, analyze.grad_variance, analyze.clusters, serve.serve,
                train.compare_guides, share.export, classes.classify, classes.transfer, documents.continue_,
                documents.cloze):
    cli.add_command(command)


def main(argv=None):
    """Entry point: runs the CLI and turns bad input into a one-line error with exit status 1 or 2.

    A ``torchrun`` worker of several processes ends with ``os._exit`` once its output is flushed
    (the run's files are closed by then): in the interpreter's teardown, gloo's threads can abort
    the process ("terminate called without an active exception") after its work is done, which
    torchrun would report as a failed run."""
    if not several_processes():
        return _main(argv)
    try:
        _main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv):
    try:
        cli.main(args=argv, prog_name="pyro-svae", standalone_mode=False)
    except SVAEError as e:
        rank = os.environ.get("RANK", "0")  # under torchrun: which process failed, if not the first
        click.echo(f"error: {'' if rank == '0' else f'[process {rank}] '}{e}", err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except OSError as e:
        click.echo(f"error: {e.filename or ''}: {e.strerror or e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
