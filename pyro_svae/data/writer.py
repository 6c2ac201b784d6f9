"""Writing one split of a token store: its tokens, offsets (and labels), through temporary files."""

import os

import numpy as np

from ..checkpoint import TMP_PREFIX


class SplitWriter:
    """Appends sentences to SPLIT.tokens / SPLIT.offsets (and SPLIT.labels, with ``classes``)
    through temporary files, renamed at close."""

    BUFFER = 1 << 16  # sentences buffered before a write

    def __init__(self, folder, name, dtype, max_len, too_long, classes=None):
        kinds = ("tokens", "offsets") + (("labels",) if classes is not None else ())
        self.final = [os.path.join(folder, f"{name}.{kind}") for kind in kinds]
        self.temp = [os.path.join(folder, f"{TMP_PREFIX}{name}.{kind}") for kind in kinds]
        self.files = [open(path, "wb") for path in self.temp]
        self.dtype, self.max_len, self.too_long = dtype, max_len, too_long
        self.pieces, self.lengths, self.labels = [], [], []
        self.total, self.counts = 0, {"sentences": 0, "tokens": 0, "too_long": 0, "empty_after_tokenizing": 0,
                                      "dtype": np.dtype(dtype).name}
        if classes is not None:
            self.counts.update(label_counts=[0] * classes, unlabeled=0)
        np.zeros(1, dtype=np.int64).tofile(self.files[1])

    def add(self, ids, label=-1):
        if len(ids) == 0:
            self.counts["empty_after_tokenizing"] += 1
            return
        if self.max_len is not None and len(ids) > self.max_len:
            self.counts["too_long"] += 1
            if self.too_long == "drop":
                return
            ids = ids[: self.max_len]
        self.pieces.append(ids)
        self.lengths.append(len(ids))
        self.labels.append(label)
        if len(self.lengths) >= self.BUFFER:
            self.flush()

    def flush(self):
        if not self.lengths:
            return
        np.concatenate(self.pieces).astype(self.dtype).tofile(self.files[0])
        ends = self.total + np.cumsum(np.asarray(self.lengths, dtype=np.int64))
        ends.tofile(self.files[1])
        if len(self.files) == 3:
            labels = np.asarray(self.labels, dtype=np.int16)
            labels.tofile(self.files[2])
            counts = np.bincount(labels[labels >= 0], minlength=len(self.counts["label_counts"]))
            self.counts["label_counts"] = [a + int(b) for a, b in zip(self.counts["label_counts"], counts)]
            self.counts["unlabeled"] += int((labels < 0).sum())
        self.total = int(ends[-1])
        self.counts["sentences"] += len(self.lengths)
        self.pieces, self.lengths, self.labels = [], [], []

    def close(self):
        self.flush()
        self.counts["tokens"] = self.total
        for f in self.files:
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for temp, final in zip(self.temp, self.final):
            os.replace(temp, final)
        return self.counts

    def abort(self):
        for f in self.files:
            f.close()
        for temp in self.temp:
            if os.path.exists(temp):
                os.unlink(temp)
