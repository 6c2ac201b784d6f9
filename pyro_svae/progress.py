"""Progress bars that suit where they are written: tqdm's bar on a terminal; elsewhere (CI logs,
``> file``) a line per update, at most one per ``every`` steps or every 30 seconds, instead of one
endless line of carriage returns."""

import sys

from tqdm.auto import tqdm

LOG_SECONDS = 30  # off a terminal: the least time between two lines of a bar without ``every``


class _Lines:
    """A file for tqdm that turns each redraw ("\\r" + status) into a line of its own."""

    def __init__(self, stream):
        self.stream, self.last = stream, None

    def write(self, text):
        text = text.replace("\r", "").rstrip()
        count = text.split("[")[0]  # the final redraw at close repeats the last update's count
        if text and count != self.last:
            self.stream.write(text + "\n")
            self.last = count

    def flush(self):
        self.stream.flush()


def progress_bar(iterable=None, every=None, file=None, **options):
    """tqdm(iterable, **options); off a terminal, one line per ``every`` updates (or per
    LOG_SECONDS when ``every`` is None)."""
    stream = file or sys.stderr
    if options.get("disable") or getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, file=stream, **options)
    pace = dict(miniters=every, mininterval=0) if every else dict(mininterval=LOG_SECONDS)
    # maxinterval: tqdm's monitor thread would otherwise set miniters to 1 after 10 quiet seconds,
    # and every step after that would print a line
    options = {**options, "maxinterval": float("inf"), **pace}
    if options.get("total") or hasattr(iterable, "__len__"):  # no bar graphic in a log
        options["bar_format"] = ((f"{options['desc']}: " if options.get("desc") else "") +
                                 "{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    return tqdm(iterable, file=_Lines(stream), **options)
