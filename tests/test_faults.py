"""Fault injection: one writer per run directory, kill -9 at random moments, a full disk during a
checkpoint write, damaged checkpoints. Every case ends in a run that loads and resumes exactly, or
in a one-line error that names the file."""

import csv
import errno
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyro_svae.checkpoint import load_checkpoint
from pyro_svae.errors import SVAEError
from pyro_svae.training.run import train

from conftest import quiet, tiny_config
from test_errors import assert_one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--emb-dim", "16", "--hidden", "24", "--z-dim", "4", "--batch-size", "16", "--dropout", "0.2",
        "--word-keep", "0.6", "--kl-schedule", "linear:0,50", "--seed", "3", "--device", "cpu", "--quiet"]


def cli(*args):
    """``python cli.py ARGS`` in a child process (one thread, so that runs compare bit for bit)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return err


def wait_for(predicate, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def metrics(run):
    with open(os.path.join(run, "metrics.csv")) as f:
        return [{k: v for k, v in row.items() if k != "minutes"} for row in csv.DictReader(f)]


def same_parameters(a, b):
    a = load_checkpoint(os.path.join(a, "checkpoint.pt"))
    b = load_checkpoint(os.path.join(b, "checkpoint.pt"))
    return a["position"]["step"] == b["position"]["step"] and all(torch.equal(a["model"][k], b["model"][k])
                                                                  for k in a["model"])


def test_kill_9_at_random_moments_then_resume_ends_bit_for_bit_as_uninterrupted(corpus, tmp_path):
    steps = ["--max-steps", "150", "--eval-every", "7"]
    reference = str(tmp_path / "reference")
    child = cli("train", "--data", str(corpus), "--out", reference, *TINY, *steps)
    wait_for(lambda: os.path.exists(os.path.join(reference, ".lock")))
    started = time.time()
    finish(child)
    duration = time.time() - started  # from taking the lock to the end: preparing, training, checkpoints
    rng = random.Random(0)
    for trial in range(4):
        run = str(tmp_path / f"killed{trial}")
        child = cli("train", "--data", str(corpus), "--out", run, *TINY, *steps)
        wait_for(lambda: os.path.exists(os.path.join(run, ".lock")))
        time.sleep(rng.uniform(0, 0.8 * duration))
        child.send_signal(signal.SIGKILL)
        child.communicate()
        if os.path.exists(os.path.join(run, "config.json")):  # the run exists: resume it
            assert "resuming" in finish(cli("train", "--resume", run, "--quiet"))
        else:  # killed while preparing the corpus: the same command starts it again
            finish(cli("train", "--data", str(corpus), "--out", run, *TINY, *steps))
        assert same_parameters(run, reference), f"trial {trial}"
        assert metrics(run) == metrics(reference)  # no row lost, none twice
        assert not [f for f in os.listdir(run) if f.startswith(".tmp-")]


def test_a_second_writer_is_refused_with_the_pid_and_a_killed_writer_does_not_block(corpus, tmp_path, run_cli):
    run = str(tmp_path / "run")
    # no early stopping: the resume below must train its 5 steps whatever the validations said
    first = cli("train", "--data", str(corpus), "--out", run, *TINY, "--max-minutes", "2", "--eval-every", "5",
                "--patience", "0")
    wait_for(lambda: os.path.exists(os.path.join(run, "checkpoint.pt")))
    try:
        assert_one_line_error(run_cli("train", "--resume", run, "--quiet"), f"process {first.pid}", "being trained")
        assert_one_line_error(run_cli("train", "--data", str(corpus), "--out", run, *TINY),
                              f"process {first.pid}")
        code, out, err = run_cli("sample", run, "-n", "2", "--checkpoint", "last")  # readers need no lock
        assert code == 0 and len(out.splitlines()) == 2, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the OS released the dead process's lock; leftovers of an interrupted write go at the next start
    stale = os.path.join(run, ".tmp-checkpoint.pt-abc123")
    with open(stale, "wb") as f:
        f.write(b"PK\x03\x04 half a checkpoint")
    step = load_checkpoint(os.path.join(run, "checkpoint.pt"))["position"]["step"]
    code, out, err = run_cli("train", "--resume", run, "--max-steps", str(step + 5), "--quiet")
    assert code == 0, err
    assert re.search(r"removed \d+ temporary file", err) and not os.path.exists(stale)
    assert load_checkpoint(os.path.join(run, "checkpoint.pt"))["position"]["step"] == step + 5


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(corpus, tmp_path, run_cli, monkeypatch):
    import pyro_svae.checkpoint as checkpoint
    import pyro_svae.training.loop as training

    run = str(tmp_path / "run")
    real_save, calls = training.atomic_save, []

    def save(state, path):  # the disk fills up in the middle of the second checkpoint.pt (step 20)
        calls.append(os.path.basename(path))
        if calls.count("checkpoint.pt") == 2:
            def write(f):
                f.write(b"PK\x03\x04 the first bytes of a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
            return checkpoint._atomic_write(path, write)
        return real_save(state, path)

    monkeypatch.setattr(training, "atomic_save", save)
    result = run_cli("train", "--data", str(corpus), "--out", run, *TINY, "--max-steps", "30", "--eval-every", "10")
    assert_one_line_error(result, "checkpoint.pt: could not be written (the disk is full)",
                          "previous checkpoint.pt is intact")
    monkeypatch.undo()
    assert load_checkpoint(os.path.join(run, "checkpoint.pt"))["position"]["step"] == 10
    assert not [f for f in os.listdir(run) if f.startswith(".tmp-")]
    # with space again, the run resumes from step 10 and ends as one that never failed
    assert run_cli("train", "--resume", run, "--quiet")[0] == 0
    reference = str(tmp_path / "reference")
    assert run_cli("train", "--data", str(corpus), "--out", reference, *TINY, "--max-steps", "30",
                   "--eval-every", "10")[0] == 0
    assert same_parameters(run, reference)
    assert metrics(run) == metrics(reference)


def flip_a_bit(path, where=0.5):
    data = bytearray(open(path, "rb").read())
    data[int(len(data) * where)] ^= 0x10
    open(path, "wb").write(bytes(data))


@pytest.fixture
def short_run(corpus, tmp_path):
    run = str(tmp_path / "run")
    train(tiny_config(corpus, max_steps=20, eval_every=10), run, log=quiet, progress=False)
    return run


def test_a_truncated_best_pt_names_the_file_and_suggests_the_other(short_run, run_cli):
    path = os.path.join(short_run, "best.pt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    assert_one_line_error(run_cli("sample", short_run), f"{path}:", "--checkpoint last")
    code, out, err = run_cli("sample", short_run, "--checkpoint", "last", "-n", "1")
    assert code == 0, err


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_bit_flipped_checkpoint_is_detected_not_loaded(short_run, run_cli, where):
    path = os.path.join(short_run, "checkpoint.pt")
    flip_a_bit(path, where)  # torch.load alone would load most such files, with a wrong number in them
    assert_one_line_error(run_cli("sample", short_run, "--checkpoint", "last"), f"{path}: corrupted",
                          "--checkpoint best")
    assert_one_line_error(run_cli("train", "--resume", short_run, "--max-steps", "30"), f"{path}: corrupted",
                          "--init-from")
    with pytest.raises(SVAEError, match="checksum does not match"):
        load_checkpoint(path)


def test_a_checkpoint_written_before_checksums_still_loads(short_run):
    from pyro_svae.checkpoint import TRAILER_SIZE

    path = os.path.join(short_run, "best.pt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-TRAILER_SIZE])  # what earlier versions wrote: the zip alone
    assert load_checkpoint(path)["position"]["step"] == 20


@pytest.mark.parametrize("option,value,fragment", [
    ("--lr", "nan", "--lr nan: must be a positive number"),
    ("--lr", "0", "--lr 0.0: must be a positive number"),
    ("--lr", "-1e-3", "--lr -0.001"),
    ("--clip-norm", "-1", "--clip-norm -1.0: must be >= 0"),
    ("--dropout", "1", "--dropout 1.0: must be in [0, 1)"),
    ("--dropout", "-0.5", "--dropout -0.5"),
    ("--eval-every", "0", "--eval-every 0: must be at least 1"),
    ("--max-steps", "-5", "--max-steps -5: must be >= 0"),
    ("--max-epochs", "-1", "--max-epochs -1"),
    ("--max-minutes", "inf", "--max-minutes inf"),
    ("--patience", "-2", "--patience -2"),
    ("--free-bits", "nan", "--free-bits nan"),
    ("--lr-decay", "0", "--lr-decay 0.0: must be in (0, 1]"),
    ("--word-keep", "nan", "--word-keep nan"),
    ("--batch-size", "0", "--batch-size 0"),
    ("--seed", "-1", "--seed -1"),
    ("--iw-particles", "0", "--iw-particles 0"),
    ("--preset", "bowman", "--preset"),
    ("--bow", "-1", "--bow -1.0: must be >= 0"),
    ("--lr-schedule", "linear", "--lr-schedule linear falls to 0 at the end of the run: give --max-steps"),
])
def test_every_bad_option_value_is_one_line_before_any_work(corpus, tmp_path, run_cli, option, value, fragment):
    out = tmp_path / "never"
    assert_one_line_error(run_cli("train", "--data", str(corpus), "--out", str(out), option, value), fragment)
    assert not out.exists()  # nothing was read or written


@pytest.mark.parametrize("args,fragment", [
    (["--decode", "sample", "--temperature", "nan"], "--temperature nan"),
    (["--decode", "sample", "--temperature", "0"], "--temperature 0.0"),
    (["--decode", "sample", "--top-k", "-1"], "--top-k -1"),
    (["--decode", "beam", "--beam", "0"], "--beam 0"),
    (["--decode", "beam", "--length-penalty", "inf"], "--length-penalty inf"),
])
def test_bad_decoding_values_are_one_line(short_run, run_cli, args, fragment):
    assert_one_line_error(run_cli("sample", short_run, *args), fragment)


def test_bad_evaluation_values_are_one_line(short_run, run_cli, monkeypatch):
    import pyro_svae.devices as devices

    assert_one_line_error(run_cli("evaluate", short_run, "--widen", "nan", "--quiet"), "--widen nan")
    monkeypatch.setattr(devices, "bf16_supported", lambda device: False)  # a CPU without bf16 instructions
    assert_one_line_error(run_cli("evaluate", short_run, "--amp", "bf16", "--quiet"), "no bf16 instructions")
