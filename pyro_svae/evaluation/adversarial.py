"""Adversarial evaluation of imputations (Bowman et al. 2015): classifiers learn to tell true
sentences from ones with imputed endings on half of the sentences and are tested on the other
half. The adversarial error is the classifier's accuracy minus the ideal 50%: lower means the
imputations are harder to tell from the truth."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from ..data.corpus import make_batch


def halves(n, seed=0):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return order[: n // 2], order[n // 2 :]


def _examples(real, fake, index):
    """Both versions of each sentence in ``index``: (token lists, labels 1 = true, 0 = imputed)."""
    return [real[i] for i in index] + [fake[i] for i in index], torch.tensor([1.0] * len(index) + [0.0] * len(index))


def unigram_counts(sentences, vocab_size):
    """Bag-of-unigram counts of token-id lists: [N, V]."""
    x = torch.zeros(len(sentences), vocab_size)
    for row, ids in enumerate(sentences):
        x[row].index_add_(0, torch.tensor(ids, dtype=torch.long), torch.ones(len(ids)))
    return x


def unigram_accuracy(real, fake, vocab_size, seed=0, steps=300, weight_decay=1e-3):
    """Logistic regression on bag-of-unigram counts; -> test accuracy."""
    train_idx, test_idx = halves(len(real), seed)
    (xs, y), (xt, yt) = _examples(real, fake, train_idx), _examples(real, fake, test_idx)
    xs, xt = unigram_counts(xs, vocab_size), unigram_counts(xt, vocab_size)
    torch.manual_seed(seed)
    model = nn.Linear(vocab_size, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(xs).squeeze(1), y).backward()
        optimizer.step()
    with torch.no_grad():
        return float(((model(xt).squeeze(1) > 0).float() == yt).float().mean())


class LSTMClassifier(nn.Module):
    def __init__(self, vocab_size, dim=64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.rnn = nn.LSTM(dim, dim, batch_first=True)
        self.out = nn.Linear(dim, 1)

    def forward(self, batch):
        packed = pack_padded_sequence(self.embed(batch.targets), batch.lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)
        return self.out(h[-1]).squeeze(1)


def lstm_accuracy(real, fake, vocab_size, seed=0, epochs=8, batch_size=64):
    """A small LSTM classifier over the whole sentence; -> test accuracy."""
    train_idx, test_idx = halves(len(real), seed)
    (xs, y), (xt, yt) = _examples(real, fake, train_idx), _examples(real, fake, test_idx)
    torch.manual_seed(seed)
    model = LSTMClassifier(vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for chunk in torch.randperm(len(xs)).split(batch_size):
            optimizer.zero_grad()
            logits = model(make_batch([xs[i] for i in chunk]))
            F.binary_cross_entropy_with_logits(logits, y[chunk]).backward()
            optimizer.step()
    with torch.no_grad():
        predictions = torch.cat([model(make_batch(xt[i : i + 256])) for i in range(0, len(xt), 256)]) > 0
        return float((predictions.float() == yt).float().mean())


def adversarial_errors(real, fake, vocab_size, seed=0):
    """-> {classifier: {"accuracy", "error"}} for true vs imputed sentences (token-id lists)."""
    report = {}
    for name, classify in (("unigram", unigram_accuracy), ("lstm", lstm_accuracy)):
        accuracy = classify(real, fake, vocab_size, seed)
        report[name] = {"accuracy": accuracy, "error": accuracy - 0.5}
    return report
