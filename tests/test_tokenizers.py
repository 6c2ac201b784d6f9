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
