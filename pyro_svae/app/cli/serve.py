"""serve: the local web explorer."""


import click

from ...errors import SVAEError
from .options import _log


@click.command()
@click.argument("run", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, which exposes the model).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="valid", show_default=True,
              help="The split whose sentences the map shows.")
@click.option("--map-size", type=click.IntRange(2, 2000), default=1000, show_default=True,
              help="Sentences on the map (the split's first ones).")
@click.option("--projection", type=click.Choice(["auto", "pca", "umap"]), default="auto", show_default=True,
              help="How the map shows z in 2-D: PCA, or UMAP (needs umap-learn); auto: UMAP where installed.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best.pt (best validation ELBO) or checkpoint.pt.")
def serve(run, host, port, split, map_size, projection, open_browser, device, checkpoint):
    """Explore a run in a local web page: map of the latent space, homotopies, posterior and prior
    samples, training curves; its JSON API is documented at /docs.

    Example: python cli.py serve runs/ptb --open
    """
    try:
        import uvicorn

        from ..explorer import create_app
    except ImportError as e:
        raise SVAEError(f"serve needs the web extra ({e.name} is missing): pip install -e '.[web]'") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        _log(f"warning: listening on {host}: anyone who can reach this machine can use the model")
    app = create_app(run, split=split, device=device, checkpoint=checkpoint, map_size=map_size, projection=projection)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{bound}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    def announce():
        import time
        import webbrowser

        while not server.started:
            time.sleep(0.05)
        _log(f"serving {run} at {url}  (API: {url}docs; Ctrl-C stops)")
        if open_browser:
            webbrowser.open(url)

    import threading

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


def _listen(host, port):
    """A listening socket on (host, port), or a one-line error (port taken, address not here)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SVAEError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port (0: any free one)") from None
    sock.listen(128)
    return sock
