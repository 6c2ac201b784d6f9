"""The one exception type that the CLI turns into a one-line error, and the same for scripts."""

import sys


class SVAEError(Exception):
    """Bad input or an unusable run: the message is shown to the user as it is."""


def run_script(main):
    """Run a script's ``main()``: bad input (SVAEError, or a file it cannot read or write) ends it
    with the CLI's one line, ``error: ...``, and exit status 1 instead of a traceback."""
    try:
        main()
    except SVAEError as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: {e.filename or ''}: {e.strerror or e}")
