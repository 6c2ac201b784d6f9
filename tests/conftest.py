"""Shared fixtures: tiny corpora written by the tests themselves, and small trained runs."""

import contextlib
import os
import random
import shutil
import subprocess
import sys

import pyro
import pytest

from pyro_svae.devices import bf16_supported
from pyro_svae.training.config import TrainConfig
from pyro_svae.training.run import train

# bf16 autocast needs CUDA or a CPU with AVX512-BF16/AMX (oneDNN has no bf16 LSTM otherwise)
needs_bf16 = pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no bf16 instructions")

SUBJECTS = ["the cat", "the dog", "a bird", "my friend", "the old man", "she", "he"]
VERBS = ["sat", "ran", "slept", "sang", "jumped", "walked"]
PLACES = ["on the mat", "in the house", "under the tree", "by the river", "at home", ""]


def toy_sentences(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(filter(None, [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(PLACES)])) + " ."
            for _ in range(n)]


def write_corpus(folder, n_train=300, n_valid=40, n_test=40, prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("valid", n_valid, 1), ("test", n_test, 2)):
        (folder / f"{prefix}{split}.txt").write_text("\n".join(toy_sentences(n, seed)) + "\n")
    return folder


def tiny_config(data, **kw):
    """A tiny model, with none of train's defaults against collapse (KL floor, dropout, early stopping,
    bidirectional encoder, z at every step, the skip connection, the bag-of-words term, the weight
    average) unless a test
    asks for them."""
    base = dict(data=str(data), emb_dim=16, hidden=24, z_dim=4, batch_size=16, eval_every=10,
                kl_schedule="linear:0,20", max_steps=20, device="cpu", free_bits=0.0, dropout=0.0, patience=0,
                word_keep=0.75, lr=1e-3, bidirectional=False, feed_z=False, skip=False, bow=0.0, ema=0.0)
    base.update(kw)
    return TrainConfig(**base)


def quiet(*args):
    pass


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A toy VAE trained for a few hundred steps, with free bits so that it uses its latent."""
    root = tmp_path_factory.mktemp("trained")
    data = write_corpus(root / "corpus", n_train=600)
    pyro.clear_param_store()
    train(tiny_config(data, max_steps=300, eval_every=100, word_keep=0.5, lr=3e-3, free_bits=0.5,
                      kl_schedule="linear:0,150"), str(root / "run"), log=quiet, progress=False)
    return str(root / "run")


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process: -> (exit code, stdout, stderr)."""
    from pyro_svae.app.cli import main

    def run(*argv):
        capsys.readouterr()
        try:
            main(list(argv))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@contextlib.contextmanager
def explorer_in_chromium(run, map_size):
    """``cli.py serve RUN`` on a free port, opened in Debian's headless Chromium: yields (driver,
    wait) once the page is ready. Skips the test where Chromium or the web extra is missing."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("browser test skipped: no Chromium (apt-get install chromium chromium-driver; .ci/run installs them)")
    pytest.importorskip("fastapi")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, os.path.join(root, "cli.py"), "serve", run, "--port", "0",
                             "--map-size", str(map_size), "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = None
    try:
        line = proc.stderr.readline()
        assert line.startswith("serving"), line + proc.stderr.read()
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        wait = WebDriverWait(driver, 60)
        driver.get(line.split(" at ")[1].split()[0])
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")
        yield driver, wait
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
