"""Reading a corpus (one sentence per line), encoding it once, and length-bucketed batches."""

import dataclasses
import hashlib
import os

import torch

from .errors import SVAEError
from .tokenizers import BOS, EOS, PAD

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class ReadStats:
    lines: int = 0
    empty: int = 0
    undecodable: list = dataclasses.field(default_factory=list)  # 1-based line numbers


def read_sentences(path):
    """UTF-8 lines of ``path``, stripped, skipping empty and undecodable lines: (sentences, stats)."""
    if not os.path.exists(path):
        raise SVAEError(f"{path}: no such file or directory")
    if not os.path.isfile(path):
        raise SVAEError(f"{path}: not a file")
    with open(path, "rb") as f:
        data = f.read()
    if b"\x00" in data[:65536]:
        raise SVAEError(f"{path}: not a text file (it contains NUL bytes)")
    stats, sentences = ReadStats(), []
    for number, raw in enumerate(data.splitlines(), 1):
        stats.lines += 1
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            stats.undecodable.append(number)
            continue
        if line:
            sentences.append(line)
        else:
            stats.empty += 1
    if stats.lines and len(stats.undecodable) == stats.lines:
        raise SVAEError(f"{path}: not UTF-8 text (no line decodes)")
    return sentences, stats


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


def deterministic_split(sentences, valid=0.05, test=0.05):
    """Split one list into train/valid/test by a fixed permutation (the same file always splits the same)."""
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(0)).tolist()
    n_valid = max(1, int(len(sentences) * valid)) if len(sentences) >= 3 else 0
    n_test = max(1, int(len(sentences) * test)) if len(sentences) >= 3 else 0
    pick = lambda idx: [sentences[i] for i in sorted(idx)]  # noqa: E731
    return {
        "train": pick(order[n_valid + n_test :]),
        "valid": pick(order[:n_valid]),
        "test": pick(order[n_valid : n_valid + n_test]),
    }


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_text_splits(path):
    """Read every split: ({split: [sentence]}, {split: ReadStats}, {file: sha256})."""
    files = split_files(path)
    texts, stats = {}, {}
    for split, file in files.items():
        texts[split], stats[split] = read_sentences(file)
    if "all" in texts:
        texts = deterministic_split(texts["all"])
    elif "valid" not in texts:
        parts = deterministic_split(texts["train"], valid=0.05, test=0.0 if "test" in texts else 0.05)
        texts = {**parts, **({"test": texts["test"]} if "test" in texts else {})}
    if not texts["train"]:
        raise SVAEError(f"{path}: the corpus has no non-empty sentence")
    return texts, stats, {os.path.basename(f): file_sha256(f) for f in files.values()}


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

    def state(self):
        return {"tokens": self.tokens, "offsets": self.offsets}


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
    lengths: torch.Tensor  # [B] = n + 1, the tokens scored per sentence (with </s>)

    @property
    def mask(self):
        return self.targets != PAD

    @property
    def size(self):
        return self.targets.shape[0]

    def num_tokens(self):
        return int(self.lengths.sum())

    def to(self, device):
        if torch.device(device).type == "cpu":
            return self
        move = lambda t: t.pin_memory().to(device, non_blocking=True)  # noqa: E731
        return Batch(self.index, move(self.inputs), move(self.targets), move(self.lengths))

    def repeat(self, k):
        """Each sentence k times in a row: [B*k, T]."""
        r = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731
        return Batch(r(self.index), r(self.inputs), r(self.targets), r(self.lengths))


def make_batch(ids, index=None):
    """Batch from a list of token-id lists (without <s> and </s>)."""
    lengths = torch.tensor([len(s) + 1 for s in ids], dtype=torch.long)
    T = int(lengths.max())
    inputs = torch.full((len(ids), T), PAD, dtype=torch.long)
    targets = torch.full((len(ids), T), PAD, dtype=torch.long)
    for row, s in enumerate(ids):
        s = torch.as_tensor(s, dtype=torch.long)
        inputs[row, 0] = BOS
        inputs[row, 1 : len(s) + 1] = s
        targets[row, : len(s)] = s
        targets[row, len(s)] = EOS
    index = torch.arange(len(ids)) if index is None else torch.as_tensor(index, dtype=torch.long)
    return Batch(index, inputs, targets, lengths)


def batch_order(split, batch_size, seed, epoch, pool=100):
    """Batches of positions for one epoch: shuffled, then sorted by length inside pools of
    ``pool`` batches so each batch holds sentences of similar length. Depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(split), generator=g)
    lengths = split.lengths[perm]
    batches = []
    step = batch_size * pool
    for start in range(0, len(perm), step):
        chunk = perm[start : start + step]
        chunk = chunk[torch.argsort(lengths[start : start + step], stable=True)]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i].tolist() for i in order]


def sorted_batches(split, batch_size):
    """Deterministic evaluation batches, sorted by length."""
    order = torch.argsort(split.lengths, stable=True).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def gather(split, positions):
    return make_batch([split.sentence(i) for i in positions], index=positions)
