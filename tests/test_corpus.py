import torch

from pyro_svae.data.corpus import EncodedSplit, batch_order, encode_sentences, gather, make_batch, read_sentences
from pyro_svae.data.tokenizers import BOS, EOS, PAD, WordTokenizer


def test_batch_inputs_targets_and_mask():
    b = make_batch([[5, 6, 7], [8]])
    assert b.inputs.tolist() == [[BOS, 5, 6, 7], [BOS, 8, PAD, PAD]]
    assert b.targets.tolist() == [[5, 6, 7, EOS], [8, EOS, PAD, PAD]]
    assert b.mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert b.lengths.tolist() == [4, 2] and b.num_tokens() == 6  # </s> counts, <s> does not


def test_read_counts_empty_and_undecodable_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"one two\n\n  \nbad \xff\xfe line\nthree\n")
    sentences, stats = read_sentences(str(path))
    assert sentences == ["one two", "three"]
    assert stats.empty == 2 and stats.undecodable == [4] and stats.lines == 5


def test_max_len_drop_and_truncate():
    tok = WordTokenizer.build(["a b c d e f"])
    split, stats = encode_sentences(["a b", "a b c d e f"], tok, max_len=3, too_long="drop")
    assert len(split) == 1 and stats.too_long == 1
    split, stats = encode_sentences(["a b", "a b c d e f"], tok, max_len=3, too_long="truncate")
    assert split.lengths.tolist() == [2, 3] and stats.too_long == 1


def test_epoch_covers_every_sentence_once_in_similar_length_batches():
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (1000,), generator=rng).tolist()
    split = EncodedSplit.from_lists([[4] * n for n in lengths])
    batches = batch_order(split, 32, seed=3, epoch=0, pool=100)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    batch = gather(split, batches[0])
    padding = 1 - batch.num_tokens() / batch.targets.numel()
    assert padding < 0.1  # sorted within a pool: little padding
    assert batch_order(split, 32, seed=3, epoch=0) == batches
    assert batch_order(split, 32, seed=3, epoch=1) != batches
