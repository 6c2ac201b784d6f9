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


def scan_sources(files, log, progress, labeled=False):
    """First pass over every file: count its lines, hash it, decide each line's split and, for a
    labeled corpus, collect the label names. -> ([(file, assign)], read stats per split, sha256
    per file name, the label names in order (numbers by value) or None). ``assign`` is the split's name
    when the file is one split, else a uint8 array giving the split of each of its sentences."""
    sources, read, checksums, names = [], {}, {}, set()
    for split, path in files.items():
        stats, digest = ReadStats(), hashlib.sha256()
        with progress_bar_for(path, f"reading {os.path.basename(path)}", progress) as bar:
            n = 0
            for line in iter_lines(path, stats, digest=digest, bar=bar):
                n += 1
                if labeled:
                    label = split_label(line)[0]
                    if label is not None:
                        names.add(label)
                        if len(names) > MAX_LABELS:
                            raise SVAEError(f"{path}: over {MAX_LABELS} different labels; with --labels tab the "
                                            "first field of each line (before a tab) is its label")
        checksums[os.path.basename(path)] = digest.hexdigest()
        log_read(log, split, stats)
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
            out.append((path, split_assignment(n, 0.05, 0.05).numpy()))
        elif split == "train" and "valid" not in has:
            out.append((path, split_assignment(n, 0.05, 0.0 if "test" in has else 0.05).numpy()))
        else:
            out.append((path, split))
    return out, read, checksums, (names if labeled else None)


def source_sentences(source, stats=None, bar=None, labels=None):
    """(split, sentence, label id) for every sentence of a source, in file order. ``labels``:
    {name: id} of a labeled corpus (the label is split off the line; -1: unlabeled), or None
    (the whole line is the sentence, label -1)."""
    path, assign = source
    for i, line in enumerate(iter_lines(path, stats or ReadStats(), bar=bar)):
        label = -1
        if labels is not None:
            name, line = split_label(line)
            label = labels[name] if name is not None else -1
        yield (assign if isinstance(assign, str) else SPLITS[assign[i]]), line, label


def train_lines(sources, progress, labeled=False):
    for source in sources:
        if isinstance(source[1], str) and source[1] != "train":
            continue
        with progress_bar_for(source[0], "counting words", progress) as bar:
            for split, line, _ in source_sentences(source, bar=bar):
                if split == "train":
                    yield split_label(line)[1] if labeled else line


def progress_bar_for(path, what, progress):
    return progress_bar(total=os.path.getsize(path), desc=what, unit="B", unit_scale=True, disable=not progress,
                        dynamic_ncols=True, leave=False, delay=1.0)


def log_read(log, split, stats):
    if stats.undecodable_count:
        lines = ", ".join(map(str, stats.undecodable)) + (" ..." if stats.undecodable_count > len(stats.undecodable) else "")
        log(f"warning: {split}: {stats.undecodable_count} lines are not UTF-8 and were skipped (lines {lines})")
    if stats.over_long:
        log(f"warning: {split}: {stats.over_long} lines longer than {stats.max_bytes} bytes were skipped")
    if stats.empty:
        log(f"{split}: {stats.empty} empty lines skipped")
