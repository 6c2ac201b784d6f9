"""The token store: streamed preparation, memory-mapped splits, runs that share a store."""

import os

import numpy as np
import pyro
import torch

import pyro_svae.data.store as store_module
from pyro_svae import load, train
from pyro_svae.checkpoint import atomic_save
from pyro_svae.data.corpus import ReadStats, iter_lines
from pyro_svae.data.store import MappedSplit, StoreOptions, load_store, prepare_store

from conftest import quiet, tiny_config, toy_sentences, write_corpus
from test_errors import assert_one_line_error


def test_store_holds_the_hand_computed_encoding(tmp_path):
    data = tmp_path / "c"
    data.mkdir()
    (data / "train.txt").write_text("b a b\nc b a\n\na b c a b c a\n")  # an empty line; 7 tokens > --max-len 6
    (data / "valid.txt").write_text("a z\n")
    (data / "test.txt").write_text("b\n")
    tokenizer, splits, info = prepare_store(str(data), str(tmp_path / "s"), StoreOptions(max_len=6), log=quiet,
                                            progress=False)
    # counts b 3, a 2, c 1 (with the dropped sentence a 5, b 5, c 3; the tie goes to b, used first)
    assert tokenizer.vocab == ["<pad>", "<unk>", "<s>", "</s>", "b", "a", "c"]
    expected = {"train": [[4, 5, 4], [6, 4, 5]], "valid": [[5, 1]], "test": [[4]]}
    for name, sentences in expected.items():
        mapped = splits[name]
        assert isinstance(mapped, MappedSplit) and isinstance(mapped.tokens, np.memmap)
        assert mapped.tokens.dtype == np.uint16
        assert [mapped.sentence(i) for i in range(len(mapped))] == sentences
        assert mapped.tokens.astype(np.int64).tolist() == [t for s in sentences for t in s]
        assert mapped.lengths.tolist() == [len(s) for s in sentences]
    assert info["splits"]["train"]["too_long"] == 1 and info["splits"]["train"]["sentences"] == 2


def test_one_file_is_split_90_5_5_the_same_way_each_time(tmp_path):
    lines = [f"w{i % 10} and w{i // 10}" for i in range(100)]  # 100 sentences, 11 words all seen in any 90
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n")
    seen = []
    for out in ("s1", "s2"):
        tokenizer, splits, _ = prepare_store(str(tmp_path / "all.txt"), str(tmp_path / out), log=quiet,
                                             progress=False)
        texts = {k: [tokenizer.decode(v.sentence(i)) for i in range(len(v))] for k, v in splits.items()}
        seen.append(texts)
    assert seen[0] == seen[1]
    assert [len(seen[0][k]) for k in ("train", "valid", "test")] == [90, 5, 5]
    assert sorted(sum(seen[0].values(), [])) == sorted(lines)
    assert seen[0]["train"] == [s for s in lines if s in set(seen[0]["train"])]  # the file's order is kept


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
