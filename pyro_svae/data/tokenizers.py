"""Tokenizers: whitespace words with a counted vocabulary, or sentencepiece subwords.

Both share the special ids  <pad>=0, <unk>=1, <s>=2, </s>=3  and are saved in a run
directory as ``tokenizer.json`` (plus ``spm.model`` for sentencepiece).
"""

import collections
import hashlib
import json
import os

from ..errors import SVAEError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
UNK_TEXT = SPECIALS[UNK]  # how a corpus (PTB) writes an unknown word


class WordTokenizer:
    """Whitespace tokens; words outside the vocabulary map to ``<unk>``."""

    kind = "word"

    def __init__(self, vocab):
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def build(cls, sentences, max_size=None, min_count=1):
        """Vocabulary from training sentences: the most frequent words, ties by first use."""
        return cls.from_counts(collections.Counter(w for s in sentences for w in s.split()), max_size, min_count)

    @classmethod
    def from_counts(cls, counts, max_size=None, min_count=1):
        """Vocabulary from {word: count} in order of first use: the most frequent words, ties by first use."""
        ranked = sorted(counts.items(), key=lambda item: item[1], reverse=True)  # stable: ties keep first use
        words = [w for w, c in ranked if c >= min_count and w not in SPECIALS]
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(SPECIALS + words)

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        return [self.index.get(w, UNK) for w in text.split()]

    def decode(self, ids):
        return " ".join(self.vocab[i] for i in ids if i not in (PAD, BOS, EOS))

    def unknown_words(self, text):
        return [w for w in text.split() if w not in self.index]

    def state(self):
        return {"kind": self.kind, "vocab": self.vocab}

    def save(self, run_dir):
        _write_json(os.path.join(run_dir, "tokenizer.json"), self.state())


class SentencePieceTokenizer:
    """Sentencepiece (unigram) trained on the train split; the model file lives in the run. A
    corpus's own unknown-word token (PTB's ``<unk>``) is the special <unk> id, never spelled in
    pieces, and the <unk> id (a character the model lacks, too) decodes as ``<unk>``.

    ``corpus_unk=False`` reads a tokenizer.json written before that rule (it lacks the key): its
    model learned ``<unk>`` as text, so it encodes and decodes as sentencepiece does, as it was
    trained."""

    kind = "spm"

    def __init__(self, model_path, corpus_unk=True):
        import sentencepiece as spm

        self.model_path = model_path
        self.corpus_unk = corpus_unk
        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        self.vocab = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    @classmethod
    def build(cls, sentences, run_dir, vocab_size=8000):
        import sentencepiece as spm

        prefix = os.path.join(run_dir, "spm")
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(s.replace(UNK_TEXT, " ") for s in sentences), model_prefix=prefix, vocab_size=vocab_size,
                pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_piece="<pad>",
                hard_vocab_limit=False, minloglevel=2, num_threads=os.cpu_count() or 1,
            )
        except RuntimeError as e:
            raise SVAEError(f"sentencepiece could not train on this corpus: {e}") from None
        return cls(prefix + ".model")

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        if not self.corpus_unk:
            return self.sp.encode(text)
        ids = []
        for i, part in enumerate(text.split(UNK_TEXT)):
            ids += ([UNK] if i else []) + (self.sp.encode(part) if part.strip() else [])
        return ids

    def decode(self, ids):
        """Pieces to text; each <unk> id as the word ``<unk>`` (sentencepiece's own, " ⁇ ", without
        corpus_unk)."""
        if not self.corpus_unk:
            return self.sp.decode([i for i in ids if i not in (PAD, BOS, EOS)])
        words, run = [], []
        for i in ids:
            if i == UNK:
                words += [self.sp.decode(run), UNK_TEXT]
                run = []
            elif i not in (PAD, BOS, EOS):
                run.append(i)
        return " ".join(" ".join(words + [self.sp.decode(run)]).split())

    def unknown_words(self, text):
        return [w for w in text.split() if (w != UNK_TEXT or not self.corpus_unk) and UNK in self.sp.encode(w)]

    def state(self):
        return {"kind": self.kind, "vocab": self.vocab, "model": os.path.basename(self.model_path),
                "corpus_unk": self.corpus_unk}

    def save(self, run_dir):
        _write_json(os.path.join(run_dir, "tokenizer.json"), self.state())


def vocab_hash(tokenizer):
    """A short fingerprint of the vocabulary, stored in checkpoints to catch mismatches."""
    return hashlib.sha256("\n".join(tokenizer.vocab).encode()).hexdigest()[:16]


def load_tokenizer(run_dir):
    path = os.path.join(run_dir, "tokenizer.json")
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        tokenizer = tokenizer_from_state(state, run_dir)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise SVAEError(f"{path}: not a readable tokenizer ({e.__class__.__name__})") from None
    if tokenizer is None:
        raise SVAEError(f"{path}: unknown tokenizer kind {state['kind']!r}")
    return tokenizer


def tokenizer_from_state(state, folder):
    """The tokenizer of a tokenizer.json's ``state`` (a sentencepiece model file in ``folder``);
    None for an unknown kind."""
    if state["kind"] == "word":
        return WordTokenizer(state["vocab"])
    if state["kind"] == "spm":  # no corpus_unk key: written before <unk> became the <unk> id
        return SentencePieceTokenizer(os.path.join(folder, state["model"]), state.get("corpus_unk", False))
    return None


def _write_json(path, obj):
    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))
