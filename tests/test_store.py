"""The token store: streamed preparation, memory-mapped splits, runs that share a store."""

import os

import numpy as np
import pyro
import pytest
import torch

import pyro_svae.store as store_module
from pyro_svae import load, train
from pyro_svae.checkpoint import atomic_save
from pyro_svae.corpus import ReadStats, encode_sentences, iter_lines, load_text_splits
from pyro_svae.store import MappedSplit, StoreOptions, load_store, prepare_store
from pyro_svae.tokenizers import WordTokenizer

from conftest import quiet, tiny_config, toy_sentences, write_corpus
from test_errors import assert_one_line_error


def in_memory(data, max_len=60):
    """The encoding of version 0.1 (the whole corpus in lists), to compare with."""
    texts, _, _ = load_text_splits(str(data))
    tok = WordTokenizer.build(texts["train"], max_size=10000)
    return tok, {name: encode_sentences(s, tok, max_len if name == "train" else None)[0] for name, s in texts.items()}


@pytest.mark.parametrize("layout", ["folder", "one file"])
def test_store_holds_what_the_in_memory_encoding_held(tmp_path, layout):
    if layout == "folder":
        data = write_corpus(tmp_path / "c", n_train=500)
    else:
        data = tmp_path / "all.txt"
        data.write_text("\n".join(toy_sentences(400)) + "\n")
    tok, expected = in_memory(data, max_len=6)
    tokenizer, splits, info = prepare_store(str(data), str(tmp_path / "s"), StoreOptions(max_len=6), log=quiet,
                                            progress=False)
    assert tokenizer.vocab == tok.vocab
    for name, split in expected.items():
        mapped = splits[name]
        assert isinstance(mapped, MappedSplit) and isinstance(mapped.tokens, np.memmap)
        assert mapped.tokens.dtype == np.uint16
        assert np.array_equal(mapped.tokens.astype(np.int32), split.tokens.numpy())
        assert torch.equal(mapped.lengths, split.lengths)
        assert mapped.sentence(3) == split.sentence(3)
    assert info["splits"]["train"]["too_long"] > 0  # sentences over --max-len 6 dropped, and counted


def test_parallel_encoding_writes_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "CHUNK", 37)  # many chunks, finishing out of order
    data = write_corpus(tmp_path / "c", n_train=2000)
    prepare_store(str(data), str(tmp_path / "one"), workers=1, log=quiet, progress=False)
    prepare_store(str(data), str(tmp_path / "two"), workers=2, log=quiet, progress=False)
    for name in ("train", "valid", "test"):
        for kind in ("tokens", "offsets"):
            a, b = (open(tmp_path / d / f"{name}.{kind}", "rb").read() for d in ("one", "two"))
            assert a == b and len(a) > 0


def test_a_vocabulary_over_65536_words_is_stored_as_uint32(tmp_path):
    data = tmp_path / "c"
    data.mkdir()
    words = [f"w{i}" for i in range(70_000)]
    (data / "train.txt").write_text("\n".join(" ".join(words[i : i + 20]) for i in range(0, 70_000, 20)) + "\n")
    (data / "valid.txt").write_text("w69999 w5\n")
    _, splits, _ = prepare_store(str(data), str(tmp_path / "s"), StoreOptions(vocab_size=80_000), log=quiet,
                                 progress=False)
    assert splits["train"].tokens.dtype == np.uint32
    assert splits["valid"].sentence(0) == [4 + 69_999, 4 + 5]  # ids above 65535 survive


def test_sentencepiece_trains_on_a_bounded_sample(tmp_path, monkeypatch):
    seen = []
    build = store_module.SentencePieceTokenizer.build

    def counting_build(sentences, *args, **kwargs):
        seen.append(len(sentences))
        return build(sentences, *args, **kwargs)

    monkeypatch.setattr(store_module, "SPM_SAMPLE", 250)
    monkeypatch.setattr(store_module.SentencePieceTokenizer, "build", counting_build)
    data = write_corpus(tmp_path / "c", n_train=600)
    tokenizer, splits, _ = prepare_store(str(data), str(tmp_path / "s"), StoreOptions(tokenizer="spm", vocab_size=60),
                                         workers=2, log=quiet, progress=False)
    assert seen == [250]
    assert len(splits["train"]) == 600 and tokenizer.decode(splits["train"].sentence(0)) == toy_sentences(600)[0]


def test_runs_share_a_prepared_store_and_load_like_any_run(tmp_path, run_cli):
    data = write_corpus(tmp_path / "c")
    code, _, err = run_cli("prepare", "--data", str(data), "--out", str(tmp_path / "s"), "--quiet")
    assert code == 0, err
    for name in ("r1", "r2"):
        pyro.clear_param_store()
        train(tiny_config(str(tmp_path / "s"), max_steps=4), str(tmp_path / name), log=quiet, progress=False)
        assert not os.path.exists(tmp_path / name / "train.tokens")  # read from the store, not copied
    vae = load(str(tmp_path / "r1"))
    assert len(vae.split("test")) == 40 and vae.evaluate("test", samples=2, progress=False)["totals"]["nll"] > 0
    # the store's tokenizer options are the run's; another value is refused before any work
    assert_one_line_error(run_cli("train", "--data", str(tmp_path / "s"), "--out", str(tmp_path / "r3"),
                                  "--vocab-size", "50"), "--vocab-size 50", "prepared with 10000")
    assert not os.path.exists(tmp_path / "r3")
    assert_one_line_error(run_cli("prepare", "--data", str(data), "--out", str(tmp_path / "s")), "already holds")
    os.rename(tmp_path / "s", tmp_path / "moved")
    assert_one_line_error(run_cli("evaluate", str(tmp_path / "r1"), "--iw-samples", "2"),
                          "token store", "is gone", "cli.py prepare")


def test_a_run_of_version_0_1_with_corpus_pt_still_loads(trained_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    _, splits, _ = load_store(str(old))
    state = {"splits": {name: {"tokens": torch.from_numpy(s.tokens.astype(np.int32)),
                               "offsets": torch.from_numpy(np.array(s.offsets))} for name, s in splits.items()}}
    for name in os.listdir(old):
        if name.endswith((".tokens", ".offsets")) or name == "store.json":
            os.unlink(old / name)
    atomic_save(state, str(old / "corpus.pt"))
    a, b = load(trained_run).split("valid"), load(str(old)).split("valid")
    assert [a.sentence(i) for i in range(len(a))] == [b.sentence(i) for i in range(len(b))]


def test_lines_over_the_byte_limit_and_undecodable_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"a b\n" + b"x" * 5000 + b"\nc d\n" + b"\xff\n" * 12 + b"e\n")
    stats = ReadStats(max_bytes=1000)
    assert list(iter_lines(str(path), stats)) == ["a b", "c d", "e"]
    assert stats.over_long == 1 and stats.undecodable_count == 12 and stats.undecodable == list(range(4, 14))
    assert stats.lines == 16
