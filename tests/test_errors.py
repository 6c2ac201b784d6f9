"""Bad input: a one-line error naming the problem, a non-zero exit, never a traceback."""

import json
import shutil

import pytest

from pyro_svae.training.run import train

from conftest import quiet, tiny_config, write_corpus

SMALL = ["--emb-dim", "8", "--hidden", "8", "--z-dim", "2", "--max-steps", "2", "--eval-every", "2", "--quiet"]


def assert_one_line_error(result, *fragments):
    code, out, err = result
    assert code != 0
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # informational lines may come before
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in errors[0]


def test_missing_path(tmp_path, run_cli):
    assert_one_line_error(run_cli("train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")),
                          "no such file")


def test_empty_corpus(tmp_path, run_cli):
    (tmp_path / "empty.txt").write_text("")
    assert_one_line_error(run_cli("train", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "r")),
                          "no non-empty sentence")


def test_corpus_with_no_valid_sentence(tmp_path, run_cli):
    # every line is either blank or longer than --max-len
    (tmp_path / "c.txt").write_text("\n".join(["", "a b c d e f g h"] * 30))
    result = run_cli("train", "--data", str(tmp_path / "c.txt"), "--out", str(tmp_path / "r"), "--max-len", "3", *SMALL)
    assert_one_line_error(result, "no valid training sentence")


def test_not_a_text_file(tmp_path, run_cli):
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 10)
    assert_one_line_error(run_cli("train", "--data", str(tmp_path / "model.bin"), "--out", str(tmp_path / "r")),
                          "not a text file")


def test_undecodable_lines_are_reported_and_skipped(tmp_path, run_cli):
    corpus = write_corpus(tmp_path / "c")
    with open(corpus / "train.txt", "ab") as f:
        f.write(b"caf\xe9 au lait\n")
    code, out, err = run_cli("train", "--data", str(corpus), "--out", str(tmp_path / "r"), *SMALL)
    assert code == 0
    assert "1 lines are not UTF-8 and were skipped (lines 301)" in err


@pytest.mark.parametrize("option,value,fragment", [
    ("--tokenizer", "bpe", "--tokenizer"),
    ("--guide", "gaussian", "valid guides: diag"),
    ("--kl-schedule", "sigmoid", "unknown KL schedule"),
    ("--word-keep", "1.5", "--word-keep"),
    ("--device", "tpu", "unknown device"),
    ("--hidden", "many", "--hidden"),
])
def test_unknown_option_values(corpus, tmp_path, run_cli, option, value, fragment):
    result = run_cli("train", "--data", str(corpus), "--out", str(tmp_path / "r"), *SMALL, option, value)
    assert_one_line_error(result, fragment)


def test_resume_on_a_directory_that_is_not_a_run(tmp_path, run_cli):
    (tmp_path / "notarun").mkdir()
    assert_one_line_error(run_cli("train", "--resume", str(tmp_path / "notarun")), "not a pyro-svae run")


def test_resume_cannot_change_the_model(corpus, tmp_path, run_cli):
    run = str(tmp_path / "r")
    assert run_cli("train", "--data", str(corpus), "--out", run, *SMALL)[0] == 0
    assert_one_line_error(run_cli("train", "--resume", run, "--hidden", "32"), "--hidden 32 differs")
    assert_one_line_error(run_cli("train", "--data", str(corpus), "--out", run, *SMALL), "already holds a run")


def test_checkpoint_from_another_vocabulary_or_size(tmp_path, run_cli):
    a = write_corpus(tmp_path / "a")
    b = write_corpus(tmp_path / "b")
    (b / "train.txt").write_text("completely different words here\nand some more of them\n" * 20)
    train(tiny_config(a, max_steps=2), str(tmp_path / "ra"), log=quiet, progress=False)
    train(tiny_config(b, max_steps=2), str(tmp_path / "rb"), log=quiet, progress=False)
    shutil.copy(tmp_path / "ra" / "best.pt", tmp_path / "rb" / "best.pt")
    assert_one_line_error(run_cli("sample", str(tmp_path / "rb"), "-n", "1"), "another vocabulary")
    shutil.copy(tmp_path / "ra" / "checkpoint.pt", tmp_path / "rb" / "checkpoint.pt")
    assert_one_line_error(run_cli("train", "--resume", str(tmp_path / "rb"), "--max-steps", "4"), "another vocabulary")
    # same vocabulary, another size: edit the run's config
    config = json.loads((tmp_path / "ra" / "config.json").read_text())
    config["train"]["hidden"] = 40
    (tmp_path / "ra" / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("sample", str(tmp_path / "ra"), "-n", "1"), "another model size")


def test_corrupt_checkpoint(corpus, tmp_path, run_cli):
    run = tmp_path / "r"
    train(tiny_config(corpus, max_steps=2), str(run), log=quiet, progress=False)
    (run / "best.pt").write_bytes(b"garbage")
    assert_one_line_error(run_cli("sample", str(run)), "not a loadable pyro-svae checkpoint")


def test_bad_sentences(corpus, tmp_path, run_cli):
    run = str(tmp_path / "r")
    train(tiny_config(corpus, max_steps=2), run, log=quiet, progress=False)
    assert_one_line_error(run_cli("reconstruct", run, "   "), "sentence 1 is empty")
    assert_one_line_error(run_cli("reconstruct", run, "the cat .", "zzz qqq"), "sentence 2 has only words outside")
    assert_one_line_error(run_cli("reconstruct", run), "no sentence given")
    assert_one_line_error(run_cli("posterior", run, "--input", str(tmp_path / "none.txt")), "no such file")
    assert_one_line_error(run_cli("homotopy", run, "only one"), "exactly two sentences")
    assert_one_line_error(run_cli("sample", str(tmp_path / "missing")), "not a pyro-svae run")
    assert_one_line_error(run_cli("sample", run, "--decode", "nucleus"), "--decode")
