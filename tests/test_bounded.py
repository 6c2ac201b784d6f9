"""Commands stay bounded whatever they are asked: decoding works in chunks and streams its output,
and a sentence over the run's --max-len is truncated to it (with a warning) everywhere."""

import json

import pytest

from pyro_svae.app import trained
from pyro_svae.app.trained import CHUNK, TrainedVAE


@pytest.fixture
def decoded_sizes(monkeypatch):
    """The number of codes of every decode call while a test runs."""
    sizes, run_model = [], TrainedVAE._run_model

    def recording(self, z, strategy="greedy", max_len=None, n=None, **search):
        sizes.append(n if z is None else z.shape[0])
        return run_model(self, z, strategy, max_len, n, **search)

    monkeypatch.setattr(TrainedVAE, "_run_model", recording)
    monkeypatch.setattr(trained, "CHUNK", 7)  # small chunks: the test exercises several
    return sizes


def test_sample_streams_in_chunks(trained_run, run_cli, decoded_sizes):
    code, out, err = run_cli("sample", trained_run, "-n", "30", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 30 and all("text" in r and "z" in r for r in rows)
    assert max(decoded_sizes) <= 7 and sum(decoded_sizes) == 30
    code, out, _ = run_cli("sample", trained_run, "-n", "30")
    assert len(out.splitlines()) == 30


def test_homotopy_streams_in_chunks_with_exact_endpoints(trained_run, run_cli, decoded_sizes):
    from pyro_svae import load

    a, b = "the cat sat on the mat", "a dog ran in the park"
    code, out, err = run_cli("homotopy", trained_run, a, b, "--steps", "20", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["t"] for r in rows] == [round(i / 19, 4) for i in range(20)]
    assert max(decoded_sizes) <= 7 and sum(decoded_sizes) == 20
    ends = load(trained_run, device="cpu").posterior_mean([a, b])
    assert rows[0]["z"] == [round(float(x), 5) for x in ends[0]]
    assert rows[-1]["z"] == [round(float(x), 5) for x in ends[1]]


def test_posterior_streams_draws_grouped_by_sentence(trained_run, run_cli, decoded_sizes):
    sentences = ["the cat sat on the mat", "a dog ran in the park"]
    code, out, err = run_cli("posterior", trained_run, *sentences, "-n", "10", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["input"], r["draw"]) for r in rows] == [(s, d) for s in sentences for d in range(1, 11)]
    assert max(decoded_sizes) <= 7
    code, out, _ = run_cli("posterior", trained_run, *sentences, "-n", "3")
    lines = out.splitlines()
    assert lines[0] == f"INPUT: {sentences[0]}" and lines[4] == f"INPUT: {sentences[1]}" and len(lines) == 8


def test_chunk_is_a_few_hundred():
    assert 16 <= CHUNK <= 1024


def test_an_overlong_sentence_is_truncated_to_max_len_everywhere(trained_run, run_cli, tmp_path):
    from pyro_svae import load

    vae = load(trained_run, device="cpu", warn=lambda m: None)
    longest = vae.longest
    words = ("the cat sat on the mat " * 20000).split()  # 120,000 tokens
    path = tmp_path / "long.txt"
    path.write_text(" ".join(words) + "\n")
    code, out, err = run_cli("evaluate", trained_run, "--input", str(path), "--iw-samples", "2", "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["tokens"] == longest + 1  # the truncated words and </s>
    assert "truncated to it" in err
    code, out, err = run_cli("reconstruct", trained_run, " ".join(words), "--json")
    assert code == 0 and f"120000 tokens, truncated to the run's --max-len {longest}" in err
    short = " ".join(words[:longest])
    assert json.loads(out)[0]["z"] == json.loads(run_cli("reconstruct", trained_run, short, "--json")[1])[0]["z"]
