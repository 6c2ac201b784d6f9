"""Reading a text corpus for a token store: its files' splits, label names and sentences, streamed."""

import dataclasses
import hashlib
import os

from ..errors import SVAEError
from ..progress import progress_bar
from .corpus import SPLITS, ReadStats, iter_lines, split_assignment

MAX_LABELS = 1000  # more label names than this: not a labeled corpus


def split_label(line):
    """``LABEL<TAB>sentence`` -> (label name or None, sentence); no tab, an empty label or ``?``:
    an unlabeled sentence (None)."""
    label, tab, text = line.partition("\t")
    if not tab:
        return None, line
    label = label.strip()
    return (label if label not in ("", "?") else None), text.strip()


SENTENCE_ENDS = (".", "?", "!")  # --documents lines: a token that is or ends with one of these ends a sentence
DOCUMENTS = ("none", "blank", "lines")


def split_sentences(line):
    """A document on one line -> its sentences: the text is cut after every whitespace token that
    is, or ends with, ``.``, ``?`` or ``!`` (``a b . c d`` -> ``a b .``, ``c d``)."""
    sentences, words = [], []
    for word in line.split():
        words.append(word)
        if word.endswith(SENTENCE_ENDS):
            sentences.append(" ".join(words))
            words = []
    if words:
        sentences.append(" ".join(words))
    return sentences


def scan_sources(files, log, progress, labeled=False, documents="none"):
    """First pass over every file: count its lines (or documents), hash it, decide each line's (or
    document's) split and, for a labeled corpus, collect the label names. -> ([(file, assign,
    documents)], read stats per split, sha256 per file name, the label names in order (numbers by
    value) or None). ``assign`` is the split's name when the file is one split, else a uint8 array
    giving the split of each of its sentences (or documents)."""
    sources, read, checksums, names = [], {}, {}, set()
    for split, path in files.items():
        stats, digest = ReadStats(), hashlib.sha256()
        with progress_bar_for(path, f"reading {os.path.basename(path)}", progress) as bar:
            n, inside = 0, False
            for line in iter_lines(path, stats, digest=digest, bar=bar, keep_empty=documents == "blank"):
                if documents == "blank":  # a document: a run of non-empty lines
                    n += bool(line) and not inside
                    inside = bool(line)
                else:
                    n += 1
                if labeled and line:
                    label = split_label(line)[0]
                    if label is not None:
                        names.add(label)
                        if len(names) > MAX_LABELS:
                            raise SVAEError(f"{path}: over {MAX_LABELS} different labels; with --labels tab the "
                                            "first field of each line (before a tab) is its label")
        checksums[os.path.basename(path)] = digest.hexdigest()
        log_read(log, split, stats, documents == "blank")
        read[split] = dataclasses.asdict(stats)
        sources.append((path, split, n))
    has = {split for _, split, _ in sources}
    if not sum(n for _, split, n in sources if split in ("train", "all")):
        raise SVAEError(f"{files.get('train', files.get('all'))}: the corpus has no non-empty sentence")
    if labeled and len(names) < 2:
        raise SVAEError(f"--labels tab: the corpus names {len(names)} label(s); a labeled corpus needs at least 2 "
                        "(lines LABEL<TAB>sentence)")
    names = sorted(names, key=lambda n: (not n.lstrip("-").isdigit(), int(n) if n.lstrip("-").isdigit() else 0, n))
    out = []
    for path, split, n in sources:
        if split == "all":
            out.append((path, split_assignment(n, 0.05, 0.05).numpy(), documents))
        elif split == "train" and "valid" not in has:
            out.append((path, split_assignment(n, 0.05, 0.0 if "test" in has else 0.05).numpy(), documents))
        else:
            out.append((path, split, documents))
    return out, read, checksums, (names if labeled else None)


def source_sentences(source, stats=None, bar=None, labels=None):
    """(split, sentence, label id, ends a document) for every sentence of a source, in file order.
    ``labels``: {name: id} of a labeled corpus (the label is split off the line; -1: unlabeled), or
    None (the whole line is the sentence, label -1). A source without documents ends none."""
    path, assign, documents = source
    split_of = (lambda i: assign) if isinstance(assign, str) else (lambda i: SPLITS[assign[i]])  # noqa: E731
    unit, previous = 0, None  # the document (or line) index; the sentence before this line (blank)
    for line in iter_lines(path, stats or ReadStats(), bar=bar, keep_empty=documents == "blank"):
        if documents == "blank":
            if previous is not None:
                yield (*previous, not line)
                unit += not line
            previous = _labeled(split_of(unit), line, labels) if line else None
        elif documents == "lines":
            split, text, label = _labeled(split_of(unit), line, labels)
            pieces = split_sentences(text)
            for k, piece in enumerate(pieces):
                yield split, piece, label, k == len(pieces) - 1
            unit += 1
        else:
            yield (*_labeled(split_of(unit), line, labels), False)
            unit += 1
    if previous is not None:
        yield (*previous, True)


def _labeled(split, line, labels):
    if labels is None:
        return split, line, -1
    name, line = split_label(line)
    return split, line, labels[name] if name is not None else -1


def train_lines(sources, progress, labeled=False):
    """The training sentences of ``sources`` (labels split off)."""
    for source in sources:
        if isinstance(source[1], str) and source[1] != "train":
            continue
        with progress_bar_for(source[0], "counting words", progress) as bar:
            for split, line, _, _ in source_sentences(source, bar=bar, labels=_ANY if labeled else None):
                if split == "train":
                    yield line


class _AnyLabel(dict):
    def __missing__(self, key):
        return -1


_ANY = _AnyLabel()


def progress_bar_for(path, what, progress):
    return progress_bar(total=os.path.getsize(path), desc=what, unit="B", unit_scale=True, disable=not progress,
                        dynamic_ncols=True, leave=False, delay=1.0)


def log_read(log, split, stats, blank_documents=False):
    if stats.undecodable_count:
        lines = ", ".join(map(str, stats.undecodable)) + (" ..." if stats.undecodable_count > len(stats.undecodable) else "")
        log(f"warning: {split}: {stats.undecodable_count} lines are not UTF-8 and were skipped (lines {lines})")
    if stats.over_long:
        log(f"warning: {split}: {stats.over_long} lines longer than {stats.max_bytes} bytes were skipped")
    if stats.empty and not blank_documents:  # there, empty lines end documents
        log(f"{split}: {stats.empty} empty lines skipped")
