"""A token store: a corpus encoded once, on disk, and read back by memory map.

A store is a folder holding, per split, ``SPLIT.tokens`` (every sentence's token ids end to
end, ``uint16`` when the vocabulary fits, else ``uint32``) and ``SPLIT.offsets`` (``int64``,
sentence i is ``tokens[offsets[i]:offsets[i+1]]``); with ``documents`` (``blank``: an empty
line ends a document; ``lines``: a document per line, cut into sentences after ``.``/``?``/``!``)
also ``SPLIT.documents`` (``int64``, document j is sentences ``documents[j]:documents[j+1]``); with
``labels="tab"`` (lines
``LABEL<TAB>sentence``) also ``SPLIT.labels`` (``int16``, an index into store.json's label names,
-1 for an unlabeled sentence: an empty label, ``?`` or no tab); the tokenizer (``tokenizer.json``, and
``spm.model`` for sentencepiece) and ``store.json`` (written last: a store without it is
incomplete). Preparing streams the text: the corpus is never held in memory, only the word
counts, one byte per line of a file that must be split, and a bounded sample for sentencepiece.
"""

import collections
import dataclasses
import json
import multiprocessing
import os
import random

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes
from .corpus import SPLITS, split_files
from ..errors import SVAEError
from .sources import progress_bar_for, scan_sources, source_sentences, train_lines
from .tokenizers import SentencePieceTokenizer, WordTokenizer, load_tokenizer, tokenizer_from_state, vocab_hash
from .writer import SplitWriter

STORE = "store.json"
FORMAT = 1
CHUNK = 8192  # lines per encoding job
PARALLEL_BYTES = 16 << 20  # corpora smaller than this are encoded in this process
SPM_SAMPLE = 2_000_000  # sentencepiece trains on at most this many random training lines


@dataclasses.dataclass
class StoreOptions:
    """How text becomes token ids (the tokenizer options of ``train``)."""

    tokenizer: str = "word"
    vocab_size: int = 10000
    min_count: int = 1
    max_len: int = 60  # training sentences only; evaluation splits stay whole
    too_long: str = "drop"
    labels: str = "none"  # tab: each line is LABEL<TAB>sentence
    documents: str = "none"  # blank: an empty line ends a document; lines: a document per line


class MappedSplit:
    """One split of a store, memory-mapped: ``len``, ``lengths`` [N] (int64, in memory) and
    ``sentence(i)`` (a list of ids), as ``corpus.EncodedSplit``; ``labels`` [N] (int16, -1:
    unlabeled) in a labeled store, else None."""

    def __init__(self, folder, name, dtype, labeled=False, documents=False):
        tokens = os.path.join(folder, f"{name}.tokens")
        # a store of documents: document j is sentences documents[j]:documents[j+1] (int64)
        self.documents = (np.memmap(os.path.join(folder, f"{name}.documents"), dtype=np.int64, mode="r")
                          if documents else None)
        path = os.path.join(folder, f"{name}.labels")
        self.labels = None
        if labeled:
            self.labels = np.memmap(path, dtype=np.int16, mode="r") if os.path.getsize(path) else np.zeros(0, np.int16)
        self.offsets = np.memmap(os.path.join(folder, f"{name}.offsets"), dtype=np.int64, mode="r")
        # numpy cannot map an empty file: an empty split has no tokens to read
        self.tokens = (np.memmap(tokens, dtype=dtype, mode="r") if os.path.getsize(tokens)
                       else np.zeros(0, dtype=dtype))
        self._lengths = None

    def __len__(self):
        return len(self.offsets) - 1

    @property
    def lengths(self):
        if self._lengths is None:
            self._lengths = torch.from_numpy(np.diff(self.offsets))
        return self._lengths

    def sentence(self, i):
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].tolist()


def is_store(path):
    return os.path.isfile(os.path.join(path, STORE))


def read_store_info(folder):
    path = os.path.join(folder, STORE)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise SVAEError(f"{path}: unreadable ({e.__class__.__name__})") from None
    if info.get("format") != FORMAT:
        raise SVAEError(f"{path}: a token store of format {info.get('format')}, this version reads {FORMAT}")
    return info


def open_store(folder):
    """{split: MappedSplit} of the store in ``folder``."""
    info = read_store_info(folder)
    splits = {}
    for name, meta in info["splits"].items():
        try:
            splits[name] = MappedSplit(folder, name, np.dtype(meta["dtype"]), "labels" in info,
                                       info["options"].get("documents", "none") != "none")
        except (OSError, ValueError) as e:
            raise SVAEError(f"{folder}: the store's {name} split is unreadable ({e.__class__.__name__}); "
                            f"prepare it again") from None
        labels, documents = splits[name].labels, splits[name].documents
        if len(splits[name]) != meta["sentences"] or int(splits[name].offsets[-1]) != meta["tokens"] \
                or (labels is not None and len(labels) != meta["sentences"]) \
                or (documents is not None and (len(documents) != meta["documents"] + 1
                                               or int(documents[-1]) != meta["sentences"])):
            raise SVAEError(f"{folder}: the store's {name} split is incomplete; prepare it again")
    return splits


# -- preparing a store ------------------------------------------------------------------------

def prepare_store(data, out, options=None, workers=0, log=print, progress=True):
    """Encode the text corpus ``data`` (a folder of splits or one file) into a store in ``out``.
    -> (tokenizer, {split: MappedSplit}, info). ``workers``: encoding processes (0: one per CPU
    for corpora over 16 MB, else this process)."""
    o = options or StoreOptions()
    files = split_files(data)
    os.makedirs(out, exist_ok=True)
    sources, read, checksums, names = scan_sources(files, log, progress, o.labels == "tab", o.documents)
    tokenizer = _build_tokenizer(sources, o, out, progress)
    total_bytes = sum(os.path.getsize(source[0]) for source in sources)
    workers = workers or ((os.cpu_count() or 1) if total_bytes > PARALLEL_BYTES else 1)
    counts = _encode(sources, tokenizer, o, out, workers, progress, names)
    for name, c in counts.items():
        verb = "dropped" if o.too_long == "drop" else "truncated"
        documents = f"{c['documents']} documents, " if "documents" in c else ""
        dropped = " (and their documents)" if "documents" in c and o.too_long == "drop" else ""
        log(f"{name}: {documents}{c['sentences']} sentences, {c['tokens']} tokens"
            + (f"; {c['too_long']} over --max-len {o.max_len} {verb}{dropped}" if c["too_long"] else ""))
    if counts["train"]["sentences"] == 0:
        raise SVAEError(f"{data}: no valid training sentence (empty, undecodable or over --max-len)")
    if counts["valid"]["sentences"] == 0:
        raise SVAEError(f"{data}: no validation sentence; give a valid split or more sentences")
    tokenizer.save(out)
    info = {"format": FORMAT, "source": os.path.abspath(data), "options": dataclasses.asdict(o),
            "vocab_size": len(tokenizer), "vocab_hash": vocab_hash(tokenizer), "data_sha256": checksums,
            "read": read, "splits": counts}
    if names is not None:
        info["labels"] = names
        log("labels: " + ", ".join(f"{n} ({sum(c['label_counts'][i] for c in counts.values())})"
                                   for i, n in enumerate(names))
            + f"; unlabeled {sum(c['unlabeled'] for c in counts.values())}")
    atomic_write_bytes(os.path.join(out, STORE), json.dumps(info, indent=1).encode())
    return tokenizer, open_store(out), info


def load_store(folder):
    """-> (tokenizer, {split: MappedSplit}, info) of a prepared store."""
    info = read_store_info(folder)
    tokenizer = load_tokenizer(folder)
    if vocab_hash(tokenizer) != info["vocab_hash"]:
        raise SVAEError(f"{folder}: the store's tokenizer.json is not the one its tokens were encoded with")
    return tokenizer, open_store(folder), info


def _build_tokenizer(sources, o, out, progress):
    labeled = o.labels == "tab"
    if o.tokenizer == "word":
        counts = {}
        for line in train_lines(sources, progress, labeled):
            for w in line.split():
                counts[w] = counts.get(w, 0) + 1
        return WordTokenizer.from_counts(counts, o.vocab_size, o.min_count)
    # sentencepiece: a uniform random sample of at most SPM_SAMPLE training lines (reservoir)
    rng, sample = random.Random(0), []
    for i, line in enumerate(train_lines(sources, progress, labeled)):
        if i < SPM_SAMPLE:
            sample.append(line)
        elif (j := rng.randrange(i + 1)) < SPM_SAMPLE:
            sample[j] = line
    return SentencePieceTokenizer.build(sample, out, vocab_size=o.vocab_size)


_WORKER = {}


def _init_worker(state, folder):
    _WORKER["tokenizer"] = tokenizer_from_state(state, folder)


def _encode_chunk(lines):
    """-> (flat ids uint32, lengths int64) of a list of sentences."""
    encode = _WORKER["tokenizer"].encode
    ids = [encode(s) for s in lines]
    lengths = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((t for s in ids for t in s), dtype=np.uint32, count=int(lengths.sum()))
    return flat, lengths


def _chunks(sources, progress, labels=None):
    """((splits [n], label ids [n], ends a document [n]), lines [n]) chunks of CHUNK sentences, in
    corpus order."""
    names, lines, ids, ends = [], [], [], []
    for source in sources:
        with progress_bar_for(source[0], f"encoding {os.path.basename(source[0])}", progress) as bar:
            for split, line, label, end in source_sentences(source, bar=bar, labels=labels):
                names.append(split)
                lines.append(line)
                ids.append(label)
                ends.append(end)
                if len(lines) == CHUNK:
                    yield (names, ids, ends), lines
                    names, lines, ids, ends = [], [], [], []
    if lines:
        yield (names, ids, ends), lines


def _encode(sources, tokenizer, o, out, workers, progress, label_names=None):
    """Encode every sentence into its split's files. -> {split: counts}."""
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    labels = {n: i for i, n in enumerate(label_names)} if label_names is not None else None
    writers = {name: SplitWriter(out, name, dtype, o.max_len if name == "train" else None, o.too_long,
                                 len(label_names) if labels is not None else None, o.documents != "none")
               for name in SPLITS}
    state = tokenizer.state()
    try:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers, _init_worker, (state, out)) as pool:
                pending = collections.deque()  # at most 2 chunks per worker in flight: bounded memory
                for names, lines in _chunks(sources, progress, labels):
                    pending.append((names, pool.apply_async(_encode_chunk, (lines,))))
                    if len(pending) >= 2 * workers:
                        names, result = pending.popleft()
                        _route(writers, names, *result.get())
                while pending:
                    names, result = pending.popleft()
                    _route(writers, names, *result.get())
        else:
            _init_worker(state, out)
            for names, lines in _chunks(sources, progress, labels):
                _route(writers, names, *_encode_chunk(lines))
        return {name: w.close() for name, w in writers.items()}
    finally:
        for w in writers.values():
            w.abort()


def _route(writers, marks, flat, lengths):
    names, labels, ends_document = marks
    ends = np.cumsum(lengths)
    starts = ends - lengths
    for name, label, a, b, last in zip(names, labels, starts.tolist(), ends.tolist(), ends_document):
        writers[name].add(flat[a:b], label)
        if last:
            writers[name].end_document()
