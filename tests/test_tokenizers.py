import pytest

from pyro_svae.errors import SVAEError
from pyro_svae.data.tokenizers import (BOS, EOS, PAD, UNK, SentencePieceTokenizer, WordTokenizer,
                                  load_tokenizer, vocab_hash)

from conftest import toy_sentences


def test_word_round_trip_and_specials():
    tok = WordTokenizer.build(["the cat sat", "the dog sat ."])
    assert tok.vocab[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    ids = tok.encode("the dog sat .")
    assert tok.decode(ids) == "the dog sat ."
    assert tok.encode("the zebra") == [tok.index["the"], UNK]
    assert tok.decode([BOS] + ids + [EOS, PAD, PAD]) == "the dog sat ."


def test_word_vocabulary_limits():
    sentences = ["a a a b b c"]
    assert WordTokenizer.build(sentences, max_size=6).vocab[4:] == ["a", "b"]
    assert WordTokenizer.build(sentences, min_count=2).vocab[4:] == ["a", "b"]
    # PTB writes <unk> itself: it must map to the special id, not a new word
    assert WordTokenizer.build(["x <unk> y"]).encode("<unk>") == [UNK]


def test_word_save_load(tmp_path):
    tok = WordTokenizer.build(toy_sentences(50))
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.vocab == tok.vocab and vocab_hash(again) == vocab_hash(tok)


def test_sentencepiece_round_trip(tmp_path):
    tok = SentencePieceTokenizer.build(toy_sentences(300), str(tmp_path), vocab_size=60)
    tok.save(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    s = "the old man walked by the river ."
    ids = again.encode(s)
    assert BOS not in ids and EOS not in ids and PAD not in ids
    assert again.decode(ids) == s
    assert again.vocab[:4] == ["<pad>", "<unk>", "<s>", "</s>"]


def test_broken_tokenizer_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(SVAEError, match="tokenizer"):
        load_tokenizer(tmp_path)


def test_sentencepiece_reads_the_corpus_unk_as_the_unknown_id_and_writes_it_back(tmp_path):
    from pyro_svae.evaluation.reconstruction import content_words

    sentences = [s.replace("river", "<unk>") for s in toy_sentences(300)]
    tok = SentencePieceTokenizer.build(sentences, str(tmp_path), vocab_size=60)
    assert not any("unk" in piece for piece in tok.vocab[4:])  # never learned as text
    s = "the <unk> man walked by the <unk> ."
    ids = tok.encode(s)
    assert ids.count(UNK) == 2 and len(ids) == len(tok.encode("the man walked by the .")) + 2
    assert tok.decode(ids) == s and tok.decode(tok.encode("<unk> the")) == "<unk> the"
    assert content_words(tok.decode(ids)) == ["man", "walked"]  # <unk> is no content word
    assert tok.unknown_words(s) == []
    # a character the model never saw is an unknown word too, and reads back as <unk>
    assert UNK in tok.encode("the ∆ man") and tok.decode(tok.encode("the ∆ man")) == "the <unk> man"


def test_a_sentencepiece_tokenizer_saved_before_the_unk_rule_encodes_as_its_model_was_trained(tmp_path):
    """A tokenizer.json without "corpus_unk" (written before <unk> became the <unk> id) keeps
    sentencepiece's own reading of <unk>, so an old run's tokens and scores do not change."""
    import json

    tok = SentencePieceTokenizer.build(toy_sentences(300), str(tmp_path), vocab_size=60)
    tok.save(str(tmp_path))
    assert json.loads((tmp_path / "tokenizer.json").read_text())["corpus_unk"] is True
    s = "the <unk> man"
    assert load_tokenizer(str(tmp_path)).encode(s) == tok.encode(s)

    state = json.loads((tmp_path / "tokenizer.json").read_text())
    del state["corpus_unk"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(state))
    old = load_tokenizer(str(tmp_path))
    assert old.encode(s) == old.sp.encode(s) != tok.encode(s)  # '<' and '>' unknown characters, as then
    assert old.decode(old.encode("the old man")) == "the old man"
    assert old.decode([UNK]) == old.sp.decode([UNK])  # sentencepiece's own rendering
    assert old.unknown_words("the <unk>") == ["<unk>"]
    assert vocab_hash(old) == vocab_hash(tok)
    (tmp_path / "again").mkdir()
    old.save(str(tmp_path / "again"))  # an export keeps the old reading
    assert json.loads((tmp_path / "again" / "tokenizer.json").read_text())["corpus_unk"] is False
