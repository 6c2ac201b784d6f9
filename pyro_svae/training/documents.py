"""The document family (``--prior chain``, models/documents.py) for the training loop: batches are
documents (``--batch-size`` of them, bucketed by their number of sentences), the plate is over the
corpus's documents, free bits are per sentence."""

import dataclasses

import torch

from ..data.documents import ConcatenatedSplit, DocumentSplit, gather_documents
from ..devices import forked_rng
from ..evaluation.documents import validate_documents
from ..inference.objectives import DocumentELBO
from ..models.decoding import Greedy
from ..models.documents import ChainVAE
from .family import AnnealedFamily
from .rundir import model_config


def whole_documents(train):
    """Whether a run (its train options, a mapping) models whole documents rather than sentences:
    the chain model, or the LM of a document store, which reads each document as one sequence."""
    return train.get("documents", "none") != "none" and (train.get("prior") == "chain" or train.get("model") == "lm")


def document_splits(splits):
    return {name: DocumentSplit(split) for name, split in splits.items()}


def concatenated_splits(splits):
    """The language model over whole documents: each document one sequence (``</s>`` between sentences)."""
    return {name: ConcatenatedSplit(DocumentSplit(split)) for name, split in splits.items()}


class DocumentFamily(AnnealedFamily):
    """The chain model of config ``c`` over DocumentSplits."""

    def __init__(self, c, tokenizer, device):
        self.c, self.tokenizer = c, tokenizer
        self.module = self.chain = ChainVAE(model_config({"train": dataclasses.asdict(c)}, len(tokenizer))).to(device)
        self.model, self.guide = self.chain.model, self.chain.guide

    def loss(self):
        return DocumentELBO(self.c.free_bits)

    def batch(self, split, positions, device):
        return gather_documents(split, positions).to(device)

    def step_kwargs(self, step, size):
        return dict(size=size, beta=self.beta(step), word_keep=self.c.word_keep)

    def samples(self, n=4):
        """A document of n sentences drawn from the chain, decoded greedily (forked RNG): the logs' text."""
        was_training = self.chain.training
        self.chain.eval()
        with torch.no_grad(), forked_rng(self.chain.device):
            torch.manual_seed(self.c.seed)
            z = self.chain.prior(torch.ones(1, n, dtype=torch.bool, device=self.chain.device)).rsample()
            _, tokens = self.chain.sentence.decode(z.view(n, -1), strategy=Greedy(unk=False),
                                                   max_len=self.c.max_len + 1)
        self.chain.train(was_training)
        return [self.tokenizer.decode(row.tolist()) for row in tokens]

    def validate(self, split, batch_size, world, step):
        m = validate_documents(self.chain, split, min(batch_size, 32), self.c.seed)
        columns = {"val_elbo": round(m["elbo"], 4), "val_elbo_sentence": round(m["elbo_sentence"], 4),
                   "val_rec": round(m["rec"], 4), "val_kl": round(m["kl"], 4)}
        return {**m, "score": m["elbo"], "beta": self.logged_beta(step),
                "columns": columns, "extra": {}}

    def report(self, m):
        return [f"val ELBO {m['elbo']:.2f} per document, {m['elbo_sentence']:.2f} per sentence "
                f"(rec {m['rec']:.2f}, KL {m['kl']:.2f} per sentence)"]
