"""Each bench/ script runs to its end on a tiny corpus with a tiny budget (as Pyro's test_examples.py
runs its examples), so that a change to the package cannot silently break a benchmark."""

import os
import subprocess
import sys

import pytest

from conftest import quiet, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ptb_like(tmp_path_factory):
    """A toy corpus named as PTB's files are, and its token store."""
    from pyro_svae import StoreOptions, prepare_store

    root = tmp_path_factory.mktemp("bench")
    data = write_corpus(root / "ptb", n_train=200, n_valid=20, n_test=20, prefix="ptb.")
    write_corpus(root / "plain", n_train=100, n_valid=20, n_test=20)
    prepare_store(str(data), str(root / "store"), StoreOptions(), log=quiet, progress=False)
    return root


def _recipes_table(root, run):
    """A results.csv as bench/recipes.py writes it, for bench/rate_distortion.py."""
    os.makedirs(f"{root}/rd/toy", exist_ok=True)
    with open(f"{root}/rd/toy/results.csv", "w") as f:
        f.write("recipe,steps,nll,rec,kl,bleu,content_kept,exact,sample_lm_nll\n"
                "default,4,31.3,23.4,8.8,0.1,0.2,0.0,3.4\nlm,4,20.6,20.6,0.0,,,,\n")
    return ["--work", f"{root}/rd", "--out", f"{root}/rd/plot.svg"]


def _labeled_yelp(root, run):
    """A toy short_yelp folder: 300 LABEL<TAB>sentence lines."""
    from conftest import toy_sentences

    os.makedirs(f"{root}/yelp", exist_ok=True)
    lines = [f"{i % 2}\t{s}" for i, s in enumerate(toy_sentences(300))]
    with open(f"{root}/yelp/short_yelp.train.10000.txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    return ["--data", f"{root}/yelp", "--sizes", "20", "--steps", "3", "--epochs", "1", "--work", f"{root}/labels"]


def _documents(root, run):
    """A toy corpus of documents (an empty line between them) and a Story Cloze file."""
    from conftest import toy_sentences

    os.makedirs(f"{root}/docs", exist_ok=True)
    sentences = toy_sentences(300)
    for split in ("train", "valid", "test"):
        with open(f"{root}/docs/{split}.txt", "w") as f:
            f.write("\n\n".join("\n".join(sentences[i : i + 3]) for i in range(0, 300, 3)) + "\n")
    with open(f"{root}/docs/cloze.tsv", "w") as f:
        f.write("id\ts1\ts2\ts3\ts4\tending1\tending2\tanswer\n" + "x\t" + "\t".join(sentences[:6]) + "\t1\n")
    return ["--data", f"{root}/docs", "--cloze", f"{root}/docs/cloze.tsv", "--work", f"{root}/documents",
            "--steps", "2", "--vocab-size", "60", "--iw-samples", "2", "--cloze-samples", "2", "--limit", "2",
            "--option", "emb_dim=8", "--option", "hidden=8", "--option", "enc_hidden=8", "--option", "z_dim=2"]


SCRIPTS = {
    "documents.py": _documents,
    "labels.py": _labeled_yelp,
    "rate_distortion.py": _recipes_table,
    "overlap.py": lambda root, run: [run, "--limit", "5", "--beam", "2", "--max-tokens", "6", "--no-unk", "--rerank"],
    "overhead.py": lambda root, run: ["--data", f"{root}/ptb", "--length", "6", "--batch-size", "4", "--steps", "2",
                                      "--rounds", "1"],
    "ptb.py": lambda root, run: ["--data", f"{root}/ptb", "--out", f"{root}/runs-ptb", "--epochs", "1",
                                 "--iw-samples", "2", "--chunk", "2", "--amp", "off", "--device", "cpu"],
    "recipes.py": lambda root, run: ["--corpus-dir", f"{root}/plain", "--recipes", "default,ae,lm", "--minutes", "0",
                                     "--steps", "4", "--iw-samples", "2", "--limit", "5", "--work", f"{root}/recipes",
                                     "--refine", "2", "--refine-iw", "2"],
    "scale.py": lambda root, run: ["--ptb", f"{root}/ptb", "--work", f"{root}/scale", "--sizes", "1",
                                   "--train-sizes", "1", "--steps", "2", "--processes", "1"],
    "speed.py": lambda root, run: ["--data", f"{root}/ptb", "--vocab-size", "50", "--emb-dim", "8", "--hidden", "8",
                                   "--z-dim", "2", "--length", "6", "--steps", "2", "--rounds", "1",
                                   "--iw-samples", "2", "--iw-chunk", "2", "--device", "cpu", "--threads", "1"],
    "steps.py": lambda root, run: ["--data", f"{root}/store", "--steps", "2", "--k", "2"],
    "templates.py": lambda root, run: ["--seeds", "0", "--out", f"{root}/templates", "--option", "max_steps=10",
                                       "--option", "eval_every=10"],
}


def test_every_bench_script_is_smoke_tested():
    assert sorted(SCRIPTS) == sorted(f for f in os.listdir(os.path.join(ROOT, "bench")) if f.endswith(".py"))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs_with_a_tiny_budget(script, ptb_like, trained_run):
    args = SCRIPTS[script](ptb_like, trained_run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip(), "printed no result"


MISSING = "/nonexistent-corpus"
BAD_INPUT = {  # script -> (arguments naming a folder that does not exist, or an unknown name; what the error names)
    "documents.py": (["--data", MISSING, "--steps", "1"], MISSING),
    "labels.py": (["--data", MISSING], MISSING),
    "overhead.py": (["--data", MISSING, "--rounds", "1", "--steps", "1"], MISSING),
    "ptb.py": (["--data", MISSING, "--epochs", "1"], MISSING),
    "rate_distortion.py": (["--work", MISSING], MISSING),
    "recipes.py": (["--corpus-dir", MISSING, "--recipes", "default,nope"], "--recipes: unknown nope"),
    "scale.py": (["--ptb", MISSING, "--sizes", "1"], MISSING),
    "speed.py": (["--data", MISSING, "--steps", "1", "--rounds", "1"], MISSING),
    "steps.py": (["--data", MISSING], MISSING),
}


@pytest.mark.parametrize("script", sorted(BAD_INPUT))
def test_bench_script_answers_bad_input_with_one_error_line(script, tmp_path):
    args, named = BAD_INPUT[script]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # argparse's usage lines come before its error line
    assert "error: " in last and named in last, proc.stderr
    assert not os.listdir(tmp_path), "wrote into the working directory"


def test_overlap_decodes_refined_posteriors_and_names_a_missing_bow_head(trained_run, tmp_path):
    script = os.path.join(ROOT, "bench", "overlap.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    refined = subprocess.run([sys.executable, script, trained_run, "--limit", "4", "--beam", "2", "--refine", "2"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refined.returncode == 0, refined.stderr[-3000:]
    assert "mean fraction kept" in refined.stdout
    guided = subprocess.run([sys.executable, script, trained_run, "--limit", "4", "--bow-guide", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert guided.returncode != 0
    assert guided.stderr.strip().splitlines() == [f"error: --bow-guide: {trained_run} has no bag-of-words head "
                                                  "(trained without --bow)"]
    not_a_run = subprocess.run([sys.executable, script, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=300)
    assert not_a_run.returncode != 0 and len(not_a_run.stderr.strip().splitlines()) == 1
    assert not_a_run.stderr.startswith("error: ") and str(tmp_path) in not_a_run.stderr


def test_the_minimal_example_trains_and_reconstructs(ptb_like):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "minimal.py"), "--data", f"{ptb_like}/plain",
                           "--steps", "60", "--warmup", "20"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("step 50: loss per sentence") and "validation ELBO per sentence" in lines[-4]
    assert len(lines[-1].split("\t->\t")) == 2  # a sentence and its reconstruction
