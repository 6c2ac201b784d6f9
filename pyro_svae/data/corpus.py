"""Reading a corpus (one sentence per line), encoding it once, and length-bucketed batches."""

import dataclasses
import os

import torch

from ..errors import SVAEError
from .tokenizers import BOS, EOS, PAD

SPLITS = ("train", "valid", "test")


MAX_LINE_BYTES = 1 << 20  # a longer line is skipped (a file that is not one sentence per line)


@dataclasses.dataclass
class ReadStats:
    lines: int = 0
    empty: int = 0
    undecodable_count: int = 0
    undecodable: list = dataclasses.field(default_factory=list)  # the first 10 such lines, 1-based
    over_long: int = 0  # lines over max_bytes, skipped
    max_bytes: int = MAX_LINE_BYTES


def iter_lines(path, stats, digest=None, bar=None, keep_empty=False):
    """Stream the non-empty UTF-8 lines of ``path``, stripped, counting in ``stats`` (a fresh
    ReadStats) the lines skipped: empty, undecodable, over ``stats.max_bytes``. ``digest``: a
    hashlib object fed every byte; ``bar``: a progress bar advanced by bytes. ``keep_empty``: an
    empty line is yielded too, as "" (a document boundary)."""
    _check_text_file(path)
    with open(path, "rb", buffering=1 << 20) as f:
        for number, (raw, size) in enumerate(_raw_lines(f, stats.max_bytes, digest), 1):
            stats.lines = number
            if bar is not None:
                bar.update(size)
            if raw is None:
                stats.over_long += 1
                continue
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                stats.undecodable_count += 1
                if len(stats.undecodable) < 10:
                    stats.undecodable.append(number)
                continue
            if line:
                yield line
            else:
                stats.empty += 1
                if keep_empty:
                    yield ""
    if stats.lines and stats.undecodable_count == stats.lines:
        raise SVAEError(f"{path}: not UTF-8 text (no line decodes)")


def _raw_lines(f, limit, digest):
    """(bytes, size) for each line of the binary file ``f``; (None, size) for a line of more
    than ``limit`` bytes, which is read past without being held."""
    while raw := f.readline(limit + 1):
        size = len(raw)
        if digest is not None:
            digest.update(raw)
        if size <= limit or raw.endswith(b"\n"):
            yield raw, size
            continue
        while rest := f.readline(1 << 20):
            size += len(rest)
            if digest is not None:
                digest.update(rest)
            if rest.endswith(b"\n"):
                break
        yield None, size


def _check_text_file(path):
    if not os.path.exists(path):
        raise SVAEError(f"{path}: no such file or directory")
    if not os.path.isfile(path):
        raise SVAEError(f"{path}: not a file")
    with open(path, "rb") as f:
        if b"\x00" in f.read(65536):
            raise SVAEError(f"{path}: not a text file (it contains NUL bytes)")


def read_sentences(path):
    """UTF-8 lines of ``path``, stripped, skipping empty and undecodable lines: (sentences, stats)."""
    stats = ReadStats()
    return list(iter_lines(path, stats)), stats


def split_files(path):
    """{split: file} for a folder of ptb.train.txt/train.txt etc., or {"all": path} for one file."""
    if not os.path.exists(path):
        raise SVAEError(f"{path}: no such file or directory")
    if os.path.isfile(path):
        return {"all": path}
    files = {}
    for split in SPLITS:
        for name in (f"ptb.{split}.txt", f"{split}.txt"):
            if os.path.isfile(os.path.join(path, name)):
                files[split] = os.path.join(path, name)
                break
    if "train" not in files:
        raise SVAEError(f"{path}: no train.txt or ptb.train.txt in this folder")
    return files


def split_assignment(n, valid=0.05, test=0.05):
    """The split of each of n sentences by a fixed permutation (the same count always splits the
    same): uint8 [n], an index into SPLITS. A nonzero fraction gets at least one sentence once n >= 3."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_valid = max(1, int(n * valid)) if valid and n >= 3 else 0
    n_test = max(1, int(n * test)) if test and n >= 3 else 0
    assign = torch.zeros(n, dtype=torch.uint8)
    assign[order[:n_valid]] = SPLITS.index("valid")
    assign[order[n_valid : n_valid + n_test]] = SPLITS.index("test")
    return assign


@dataclasses.dataclass
class EncodedSplit:
    """Sentences as one flat int32 tensor with offsets: sentence i is tokens[offsets[i]:offsets[i+1]]."""

    tokens: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_lists(cls, ids):
        lengths = torch.tensor([len(s) for s in ids], dtype=torch.long)
        offsets = torch.zeros(len(ids) + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        flat = torch.tensor([t for s in ids for t in s], dtype=torch.int32)
        return cls(flat, offsets)

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def lengths(self):
        return self.offsets[1:] - self.offsets[:-1]

    def sentence(self, i):
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].tolist()


@dataclasses.dataclass
class EncodeStats:
    too_long: int = 0
    empty: int = 0


def encode_sentences(sentences, tokenizer, max_len=None, too_long="drop"):
    """Encode with ``tokenizer``; sentences over ``max_len`` tokens are dropped or truncated."""
    ids, stats = [], EncodeStats()
    for s in sentences:
        t = tokenizer.encode(s)
        if not t:
            stats.empty += 1
            continue
        if max_len is not None and len(t) > max_len:
            stats.too_long += 1
            if too_long == "drop":
                continue
            t = t[:max_len]
        ids.append(t)
    return EncodedSplit.from_lists(ids), stats


@dataclasses.dataclass
class Batch:
    """A padded minibatch. inputs = <s> w1..wn, targets = w1..wn </s>; both [B, T], padded with <pad>."""

    index: torch.Tensor  # [B] positions in the split (the plate's subsample)
    inputs: torch.Tensor  # [B, T]
    targets: torch.Tensor  # [B, T]
    lengths: torch.Tensor  # [B] = n + 1, the tokens scored per sentence (with </s>); on the host
    labels: torch.Tensor = None  # [B] int64 class ids, -1 where unlabeled (a labeled corpus); on the host

    @property
    def mask(self):
        return self.targets != PAD

    @property
    def size(self):
        return self.targets.shape[0]

    def num_tokens(self):
        return int(self.lengths.sum())

    def to(self, device):
        """The token tensors on ``device``; index and lengths stay on the host, where the plate's
        subsample and pack_padded_sequence read them, so counting tokens never waits for the device."""
        if torch.device(device).type == "cpu":
            return self
        move = lambda t: t.pin_memory().to(device, non_blocking=True)  # noqa: E731
        return Batch(self.index, move(self.inputs), move(self.targets), self.lengths, self.labels)

    def repeat(self, k):
        """Each sentence k times in a row: [B*k, T]."""
        r = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
        return Batch(r(self.index), r(self.inputs), r(self.targets), r(self.lengths),
                     None if self.labels is None else r(self.labels))

    def select(self, rows):
        """The sentences at ``rows`` (a host int64 tensor) as a Batch, padding trimmed to its longest."""
        T = int(self.lengths[rows].max()) if len(rows) else 1
        device_rows = rows.to(self.targets.device)
        return Batch(self.index[rows], self.inputs[device_rows, :T], self.targets[device_rows, :T], self.lengths[rows],
                     None if self.labels is None else self.labels[rows])


def make_batch(ids, index=None, labels=None):
    """Batch from a list of token-id lists (without <s> and </s>); ``labels``: a class id per
    sentence (-1: unlabeled), or None."""
    sizes = [len(s) + 1 for s in ids]
    lengths, T = torch.tensor(sizes, dtype=torch.long), max(sizes)
    inputs = torch.full((len(ids), T), PAD, dtype=torch.long)
    targets = torch.full((len(ids), T), PAD, dtype=torch.long)
    for row, s in enumerate(ids):
        s = torch.as_tensor(s, dtype=torch.long)
        inputs[row, 0] = BOS
        inputs[row, 1 : len(s) + 1] = s
        targets[row, : len(s)] = s
        targets[row, len(s)] = EOS
    index = torch.arange(len(ids)) if index is None else torch.as_tensor(index, dtype=torch.long)
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    return Batch(index, inputs, targets, lengths, labels)


def decoded_ids(tokens):
    """Decoded rows tokens [N, L] (w1..wn </s> <pad>..) -> their token-id lists, without specials."""
    return [[t for t in row if t not in (PAD, BOS, EOS)] for row in tokens.tolist()]


class BatchOrder:
    """An epoch's batches as one permutation of the split and batch boundaries (no Python object
    per sentence): ``order[i]`` is the i-th batch's positions [b] (int64)."""

    def __init__(self, positions, starts):
        self.positions, self.starts = positions, starts  # [N], [n_batches + 1]

    def __len__(self):
        return len(self.starts) - 1

    def __getitem__(self, i):
        return self.positions[self.starts[i] : self.starts[i + 1]]

    def __eq__(self, other):
        return torch.equal(self.positions, other.positions) and torch.equal(self.starts, other.starts)


def batch_order(split, batch_size, seed, epoch, pool=100):
    """Batches of positions for one epoch: shuffled, then sorted by length inside pools of
    ``pool`` batches so each batch holds sentences of similar length, then the batches shuffled.
    Depends only on (seed, epoch); array operations only."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(split)
    perm = torch.randperm(n, generator=g)
    key = split.lengths[perm]  # sort key: (pool, length), built in place
    key += torch.arange(n).floor_divide_(batch_size * pool).mul_(int(key.max()) + 1 if n else 1)
    perm = perm[torch.argsort(key, stable=True)]
    del key
    # the batches (consecutive runs of batch_size; the last may be short) in a random order
    n_full, rest = divmod(n, batch_size)
    shuffled = torch.randperm(n_full + (rest > 0), generator=g)
    full = perm[: n_full * batch_size].view(n_full, batch_size)
    short = (shuffled == n_full).nonzero().flatten().tolist()  # the short batch's slot, if any
    cut = short[0] if short else n_full
    positions = torch.cat([full[shuffled[:cut]].flatten(), perm[n_full * batch_size :],
                           full[shuffled[cut + 1 :]].flatten()])
    starts = torch.arange(n_full + (rest > 0) + 1) * batch_size
    if rest:
        starts[cut + 1 :] -= batch_size - rest
    return BatchOrder(positions, starts)


def sorted_batches(split, batch_size):
    """Deterministic evaluation batches, sorted by length."""
    order = torch.argsort(split.lengths, stable=True).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def gather(split, positions):
    """The Batch of ``split``'s sentences at ``positions`` (a list or an int64 tensor)."""
    if torch.is_tensor(positions):
        positions = positions.tolist()
    labels = getattr(split, "labels", None)
    return make_batch([split.sentence(i) for i in positions], index=positions,
                      labels=None if labels is None else labels[positions].astype("int64"))
