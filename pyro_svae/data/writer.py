"""Writing one split of a token store: its tokens, offsets (and labels, and document offsets),
through temporary files renamed at close."""

import os

import numpy as np

from ..checkpoint import TMP_PREFIX

MAX_DOCUMENT = 256  # sentences: a longer run of sentences is cut into documents of this many


class SplitWriter:
    """Appends sentences to SPLIT.tokens / SPLIT.offsets (and SPLIT.labels, with ``classes``; and
    SPLIT.documents, with ``documents``: ``end_document`` closes the sentences added since the last
    one into a document, which a sentence over ``max_len`` drops whole when ``too_long`` is drop)."""

    BUFFER = 1 << 16  # sentences buffered before a write

    def __init__(self, folder, name, dtype, max_len, too_long, classes=None, documents=False):
        kinds = ("tokens", "offsets") + (("labels",) if classes is not None else ()) \
            + (("documents",) if documents else ())
        self.final = [os.path.join(folder, f"{name}.{kind}") for kind in kinds]
        self.temp = [os.path.join(folder, f"{TMP_PREFIX}{name}.{kind}") for kind in kinds]
        self.files = dict(zip(kinds, (open(path, "wb") for path in self.temp)))
        self.dtype, self.max_len, self.too_long = dtype, max_len, too_long
        self.pieces, self.lengths, self.labels = [], [], []
        self.total, self.counts = 0, {"sentences": 0, "tokens": 0, "too_long": 0, "empty_after_tokenizing": 0,
                                      "dtype": np.dtype(dtype).name}
        if classes is not None:
            self.counts.update(label_counts=[0] * classes, unlabeled=0)
        np.zeros(1, dtype=np.int64).tofile(self.files["offsets"])
        self.document = None
        if documents:  # the open document's sentences, and whether one of them was too long
            self.counts.update(documents=0, dropped_documents=0)
            self.document, self.document_dropped, self.document_ends = [], False, []
            np.zeros(1, dtype=np.int64).tofile(self.files["documents"])

    def add(self, ids, label=-1):
        if len(ids) == 0:
            self.counts["empty_after_tokenizing"] += 1
            return
        if self.max_len is not None and len(ids) > self.max_len:
            self.counts["too_long"] += 1
            if self.too_long == "drop":
                if self.document is not None:
                    self.document_dropped = True
                return
            ids = ids[: self.max_len]
        if self.document is None:
            self._append(ids, label)
            return
        self.document.append((ids, label))
        if len(self.document) >= MAX_DOCUMENT:
            self.end_document()

    def end_document(self):
        if self.document_dropped:
            self.counts["dropped_documents"] += 1
        elif self.document:
            for ids, label in self.document:
                self._append(ids, label)
            self.counts["documents"] += 1
            self.document_ends.append(self.counts["sentences"] + len(self.lengths))
        self.document, self.document_dropped = [], False

    def _append(self, ids, label):
        self.pieces.append(ids)
        self.lengths.append(len(ids))
        self.labels.append(label)
        if len(self.lengths) >= self.BUFFER:
            self.flush()

    def flush(self):
        if self.document is not None and self.document_ends:
            np.asarray(self.document_ends, dtype=np.int64).tofile(self.files["documents"])
            self.document_ends = []
        if not self.lengths:
            return
        np.concatenate(self.pieces).astype(self.dtype).tofile(self.files["tokens"])
        ends = self.total + np.cumsum(np.asarray(self.lengths, dtype=np.int64))
        ends.tofile(self.files["offsets"])
        if "labels" in self.files:
            labels = np.asarray(self.labels, dtype=np.int16)
            labels.tofile(self.files["labels"])
            counts = np.bincount(labels[labels >= 0], minlength=len(self.counts["label_counts"]))
            self.counts["label_counts"] = [a + int(b) for a, b in zip(self.counts["label_counts"], counts)]
            self.counts["unlabeled"] += int((labels < 0).sum())
        self.total = int(ends[-1])
        self.counts["sentences"] += len(self.lengths)
        self.pieces, self.lengths, self.labels = [], [], []

    def close(self):
        if self.document:  # sentences after the last end of a document make one more
            self.end_document()
        self.flush()
        self.counts["tokens"] = self.total
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        for temp, final in zip(self.temp, self.final):
            os.replace(temp, final)
        return self.counts

    def abort(self):
        for f in self.files.values():
            f.close()
        for temp in self.temp:
            if os.path.exists(temp):
                os.unlink(temp)
