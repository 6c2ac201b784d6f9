"""``pip install .`` (not editable) installs the package alone, with its page assets and a console
script that works from any directory."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_non_editable_install_has_no_top_level_cli_and_its_script_runs(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), ROOT], check=True, capture_output=True, timeout=300)
    top = sorted(p.name for p in target.iterdir())
    assert "cli.py" not in top and "cli" not in top
    assert [p for p in top if not p.startswith("pyro_svae")] == ["bin"]
    assert (target / "pyro_svae" / "app" / "static" / "explorer.js").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([str(target / "bin" / "pyro-svae"), "--help"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "serve" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", "import pyro_svae, sys; print(pyro_svae.__file__)"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().startswith(str(target))  # the installed copy, not the checkout


def test_the_installed_script_trains_samples_exports_and_loads_from_another_directory(tmp_path):
    from conftest import write_corpus

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), ROOT], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    corpus = write_corpus(elsewhere / "corpus", n_train=100, n_valid=20, n_test=20)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}

    def script(*args):
        proc = subprocess.run([str(target / "bin" / "pyro-svae"), *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    script("train", "--data", str(corpus), "--out", "run", "--max-steps", "20", "--eval-every", "10",
           "--emb-dim", "8", "--hidden", "8", "--z-dim", "2", "--quiet")
    samples = script("sample", "run", "-n", "3", "--seed", "1")
    assert len(samples.splitlines()) == 3
    script("export", "run", "model")
    assert script("sample", "model", "-n", "3", "--seed", "1") == samples
    proc = subprocess.run([sys.executable, "-c", "import pyro_svae; print(pyro_svae.load('model').z_dim)"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2", proc.stderr[-2000:]
