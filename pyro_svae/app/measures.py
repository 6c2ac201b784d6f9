"""The document measures of any run trained on a document store (``--documents``): the chain
model's, and its baselines' (a sentence VAE: each sentence alone; the LM of whole documents).

    vae = pyro_svae.load("runs/stories-lm")
    result = vae.evaluate_documents("test")      # NLL per document and of each sentence given the earlier
    accuracy, choices, _ = vae.cloze("../shared/data/stories/cloze.valid.tsv")"""

import numpy as np
import torch

from ..data.corpus import EncodedSplit, encode_sentences
from ..data.tokenizers import UNK
from ..data.documents import DocumentSplit, read_cloze, read_documents
from ..errors import SVAEError
from ..evaluation.documents import (chain_positions, chain_score, cloze_accuracy, concatenated_positions,
                                    evaluate_documents, sentence_positions, summed_score)
from ..training.documents import whole_documents
from ..training.rundir import load_corpus


class DocumentMeasures:
    """evaluate_documents and cloze for a TrainedVAE trained on a document store."""

    def document_split(self, name="test", input_file=None, limit=0):
        """A DocumentSplit: one of the run's splits, or a file of documents (the run's --documents
        format, blank by default), encoded with the run's tokenizer; ``limit``: the first documents."""
        if input_file:
            mode = self.config["train"].get("documents", "none")
            documents = read_documents(input_file, mode if mode != "none" else "blank")
            split = self._encoded_documents(documents[: limit or None])
        else:
            splits = load_corpus(self.run_dir)
            if name not in splits or getattr(splits[name], "documents", None) is None:
                raise SVAEError(f"{self.run_dir}: the run has no documents in a {name} split (train it on a "
                                "store prepared with --documents)")
            split = DocumentSplit(splits[name])
            if limit and limit < len(split):
                split = self._encoded_documents([split.document(i) for i in range(limit)], encoded=True)
        if len(split) == 0:
            raise SVAEError(f"{input_file or name}: no document to evaluate")
        return split

    def _encoded_documents(self, documents, encoded=False):
        flat = [s for d in documents for s in d]
        if encoded:
            split = EncodedSplit.from_lists(flat)
        else:
            split, stats = encode_sentences(flat, self.tokenizer, self.longest, too_long="truncate")
            if stats.empty:
                raise SVAEError("a sentence of the documents has no token after tokenizing")
        split.documents = np.concatenate([[0], np.cumsum([len(d) for d in documents])]).astype(np.int64)
        return DocumentSplit(split)

    def positions(self, samples=100):
        """log p(x_t | x_<t) per sentence of a DocumentBatch, by this run's kind of model."""
        if hasattr(self, "chain"):
            return chain_positions(self.chain, samples)
        if whole_documents(self.config["train"]):  # here, the LM of whole documents
            return concatenated_positions(self.svae)
        return sentence_positions(self.svae, samples)

    def document_score(self, samples=100):
        if hasattr(self, "chain"):
            return chain_score(self.chain, samples)
        return summed_score(self.positions(samples))

    @torch.inference_mode()
    def evaluate_documents(self, split="test", samples=100, batch_size=8, limit=0, seed=0, progress=True,
                           input_file=None):
        """NLL per document, per sentence and of the t-th sentence given the earlier ones (IW,
        K = ``samples``; the LM's exact), perplexity; a chain run adds its ELBO and KL per sentence."""
        data = split if isinstance(split, DocumentSplit) else self.document_split(split, input_file, limit)
        return evaluate_documents(self.positions(samples), data, batch_size, seed, progress,
                                  getattr(self, "chain", None), self.svae.device)

    @torch.inference_mode()
    def cloze(self, path, samples=100, batch_size=8, limit=0, seed=0, progress=True):
        """The Story Cloze task on a TSV file: -> (accuracy, choices [N] of 1|2, log p(story) [N, 2])."""
        items = read_cloze(path)[: limit or None]
        encode = lambda s: self.tokenizer.encode(s)[: self.longest] or [UNK]  # noqa: E731
        encoded = [([encode(s) for s in context], encode(e1), encode(e2), answer) for context, e1, e2, answer in items]
        torch.manual_seed(seed)
        return cloze_accuracy(self.document_score(samples), encoded, batch_size, progress)
