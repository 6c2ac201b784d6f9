"""Documents: a split of a token store as documents of sentences, and their minibatches.

A document batch holds its S sentences as one sentence Batch (document-major, in order) and where
each sits in a [D, T] grid (D documents, T = the most sentences of any of them)."""

import dataclasses

import numpy as np
import torch

from ..errors import SVAEError
from .corpus import Batch, ReadStats, iter_lines, make_batch
from .sources import source_sentences
from .tokenizers import EOS


class DocumentSplit:
    """The documents of a ``MappedSplit`` of a store prepared with ``--documents``: ``len`` (the
    number of documents), ``lengths`` [N] (sentences per document, for bucketing batches) and
    ``document(i)`` (a list of sentences, each a list of ids)."""

    def __init__(self, split):
        if getattr(split, "documents", None) is None:
            raise SVAEError("the corpus has no documents: prepare it with --documents blank (an empty line "
                            "between documents) or --documents lines (a document per line)")
        self.sentences = split
        self.offsets = torch.from_numpy(np.array(split.documents, dtype=np.int64))  # a copy: 8 bytes a document
        self.lengths = self.offsets[1:] - self.offsets[:-1]

    def __len__(self):
        return len(self.offsets) - 1

    def span(self, i):
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def document(self, i):
        a, b = self.span(i)
        return [self.sentences.sentence(j) for j in range(a, b)]


class ConcatenatedSplit:
    """Each document of a ``DocumentSplit`` as one sequence, its sentences joined by ``</s>`` (the
    language model over whole documents): ``len``, ``lengths`` and ``sentence(i)`` as a sentence split."""

    def __init__(self, documents):
        self.documents = documents
        tokens = documents.sentences.lengths  # per sentence, without </s>
        sums = torch.zeros(len(tokens) + 1, dtype=torch.long)
        sums[1:] = tokens.cumsum(0)
        o = documents.offsets
        self.lengths = sums[o[1:]] - sums[o[:-1]] + documents.lengths - 1  # the separators between sentences

    def __len__(self):
        return len(self.documents)

    def sentence(self, i):
        return join_sentences(self.documents.document(i))


def join_sentences(sentences):
    """[[ids], ...] -> one sequence with ``</s>`` between the sentences."""
    out = []
    for k, s in enumerate(sentences):
        out.extend(s if k == 0 else [EOS, *s])
    return out


@dataclasses.dataclass
class DocumentBatch:
    """D documents, S sentences in all. ``sentences``: their Batch [S, L], document-major;
    ``slots`` [S]: each sentence's place d * T + t in the [D, T] grid; ``sizes`` [D]: sentences per
    document; ``index`` [D]: the documents' positions in the split (the plate's subsample).
    index, sizes and slots stay on the host; the sentences' tokens move with ``to``."""

    index: torch.Tensor
    sentences: Batch
    sizes: torch.Tensor
    slots: torch.Tensor

    @property
    def size(self):
        return len(self.sizes)

    @property
    def steps(self):
        return int(self.sizes.max()) if len(self.sizes) else 0

    @property
    def mask(self):
        """[D, T] bool: which slots hold a sentence (on the sentences' device)."""
        steps = torch.arange(self.steps, device=self.sentences.targets.device)
        return steps < self.sizes.to(steps.device).unsqueeze(-1)

    def num_tokens(self):
        return self.sentences.num_tokens()

    def to(self, device):
        return dataclasses.replace(self, sentences=self.sentences.to(device))

    def documents(self):
        """The documents as lists of token-id lists (without <s>, </s>)."""
        targets, lengths = self.sentences.targets.cpu(), self.sentences.lengths
        rows = [targets[i, : int(lengths[i]) - 1].tolist() for i in range(len(lengths))]
        starts = (self.sizes.cumsum(0) - self.sizes).tolist()
        return [rows[a : a + n] for a, n in zip(starts, self.sizes.tolist())]

    def prefix(self, t):
        """The documents' first ``t`` sentences (documents shorter than that stay whole)."""
        rows = ((self.slots % max(self.steps, 1)) < t).nonzero().flatten()
        return self._regroup(rows, self.sizes.clamp(max=t), self.index)

    def repeat(self, k):
        """Each document k times in a row: [D * k] documents."""
        starts = self.sizes.cumsum(0) - self.sizes
        rows = torch.cat([torch.arange(a, a + n) for a, n in zip(starts.tolist(), self.sizes.tolist())
                          for _ in range(k)]) if len(self.sizes) else torch.zeros(0, dtype=torch.long)
        return self._regroup(rows, self.sizes.repeat_interleave(k), self.index.repeat_interleave(k))

    def _regroup(self, rows, sizes, index):
        return DocumentBatch(index, self.sentences.select(rows), sizes, grid_slots(sizes))


def grid_slots(sizes):
    """Each sentence's slot d * T + t in the [D, T] grid of documents of ``sizes`` [D]."""
    T = int(sizes.max()) if len(sizes) else 0
    document = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    starts = sizes.cumsum(0) - sizes
    return document * T + torch.arange(len(document)) - starts[document]


def make_document_batch(documents, index=None):
    """DocumentBatch from a list of documents, each a list of token-id lists (without <s>, </s>)."""
    if any(len(d) == 0 for d in documents):
        raise SVAEError("a document needs at least one sentence")
    sizes = torch.tensor([len(d) for d in documents], dtype=torch.long)
    index = torch.arange(len(documents)) if index is None else torch.as_tensor(index, dtype=torch.long)
    return DocumentBatch(index, make_batch([s for d in documents for s in d]), sizes, grid_slots(sizes))


def gather_documents(split, positions):
    """The DocumentBatch of a DocumentSplit's documents at ``positions``."""
    if torch.is_tensor(positions):
        positions = positions.tolist()
    return make_document_batch([split.document(i) for i in positions], positions)


def read_documents(path, mode="blank"):
    """The documents of a text file, each a list of sentences (strings), cut as the token store
    cuts them (``sources.source_sentences``): ``blank``, an empty line between documents; ``lines``,
    a document per line cut after ``.``/``?``/``!`` tokens."""
    documents, current = [], []
    for _, sentence, _, ends in source_sentences((path, "test", mode)):
        current.append(sentence)
        if ends:
            documents.append(current)
            current = []
    if not documents:
        raise SVAEError(f"{path}: no document in this file")
    return documents


CLOZE_HEADER = ["id", "s1", "s2", "s3", "s4", "ending1", "ending2", "answer"]


def read_cloze(path):
    """Story Cloze items of a TSV file (header id, s1..s4, ending1, ending2, answer): -> [(context
    [4 sentences], ending 1, ending 2, answer 1|2)]."""
    items = []
    for number, line in enumerate(iter_lines(path, ReadStats()), 1):
        fields = [f.strip() for f in line.split("\t")]
        if number == 1:
            if fields[: len(CLOZE_HEADER)] != CLOZE_HEADER:
                raise SVAEError(f"{path}: not a Story Cloze file (its header must be {' '.join(CLOZE_HEADER)}, "
                                "tab-separated)")
            continue
        if len(fields) < len(CLOZE_HEADER) or fields[7] not in ("1", "2") or not all(fields[1:7]):
            raise SVAEError(f"{path}: line {number} is not an item (8 tab-separated fields, answer 1 or 2)")
        items.append((fields[1:5], fields[5], fields[6], int(fields[7])))
    if not items:
        raise SVAEError(f"{path}: no Story Cloze item in this file")
    return items
