"""``python cli.py COMMAND``: the pyro-svae command line (pyro_svae/app/cli.py), run from a checkout."""

from pyro_svae.app.cli import main

if __name__ == "__main__":
    main()
