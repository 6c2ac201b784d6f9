"""Progress bars: tqdm's on a terminal, a line every N steps elsewhere."""

import io

from pyro_svae.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_a_bar_is_a_line_every_n_steps():
    out = io.StringIO()
    for _ in progress_bar(range(50), every=10, file=out, desc="train"):
        pass
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split()[1] for line in lines] == ["0%", "20%", "40%", "60%", "80%", "100%"]
    assert lines[-1].startswith("train: 100%") and "50/50" in lines[-1]


def test_on_a_terminal_it_is_tqdm_redrawing_one_line():
    out = Terminal()
    for _ in progress_bar(range(50), every=10, file=out, mininterval=0):
        pass
    assert out.getvalue().count("\r") >= 10 and out.getvalue().count("\n") <= 1


def test_training_off_a_terminal_logs_lines(corpus, tmp_path, capsys):
    from pyro_svae import train

    from conftest import quiet, tiny_config

    train(tiny_config(corpus, max_steps=40, eval_every=20), str(tmp_path / "run"), log=quiet, progress=True)
    err = capsys.readouterr().err
    steps = [line for line in err.splitlines() if "step" in line and "/40" in line]
    assert "\r" not in err and len(steps) >= 5  # every eval_every // 5 = 4 steps, at least


def test_off_a_terminal_tqdms_monitor_cannot_turn_the_lines_into_one_per_step():
    out = io.StringIO()
    bar = progress_bar(total=None, every=100, file=out)
    # tqdm's monitor thread sets miniters = 1 on a bar quiet for maxinterval seconds (10 by default),
    # which, in a log, printed a line for every step of a long run
    assert bar.miniters == 100 and bar.maxinterval == float("inf")
    bar.close()
