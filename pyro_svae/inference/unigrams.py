"""A mixture of unigrams fitted by EM (Nigam et al. 2000): K word distributions, a uniform class
prior, and each sentence's responsibilities r(y | x), with the known labels clamped; the restart
with the best log-likelihood is kept. ``--class-init`` starts q(y | x) of ``--prior class`` from
these classes: clusters of the sentences' words, found before z can learn the sentences itself."""

import math

import torch

from ..data.tokenizers import SPECIALS

SMOOTHING = 0.1  # pseudo-count of every word in every class


def bag_counts(tokens, vocab_size):
    """Word counts of each sentence, specials (padding, </s>, <unk>) left out: tokens [N, T] ->
    a sparse [N, V] float tensor."""
    n, t = tokens.shape
    keep = tokens >= len(SPECIALS)
    rows = torch.arange(n).unsqueeze(1).expand(n, t)[keep]
    counts = torch.sparse_coo_tensor(torch.stack([rows, tokens[keep]]), torch.ones(int(keep.sum())), (n, vocab_size),
                                     check_invariants=True)
    return counts.coalesce()


def fit(counts, classes, labels=None, restarts=10, iterations=50, seed=0):
    """EM on counts [N, V] (sparse) for ``classes`` word distributions under a uniform prior.
    labels [N] (class ids, -1: unknown) clamp the known rows' responsibilities. The best of
    ``restarts`` random starts (each from Dirichlet(1) responsibilities). -> (r [N, K], the
    log-likelihood per sentence of the kept restart)."""
    n = counts.shape[0]
    generator = torch.Generator().manual_seed(seed)
    known = labels is not None and bool((labels >= 0).any())
    if known:
        clamp = torch.nn.functional.one_hot(labels.clamp(min=0), classes).float()
        is_known = (labels >= 0).unsqueeze(1)
    best, best_ll = None, -math.inf
    for _ in range(restarts):
        r = -torch.rand(n, classes, generator=generator).log()  # normalized: Dirichlet(1) draws
        r = r / r.sum(1, keepdim=True)
        for _ in range(iterations):
            if known:
                r = torch.where(is_known, clamp, r)
            words = torch.sparse.mm(counts.t(), r).t() + SMOOTHING  # [K, V] expected counts
            log_phi = (words / words.sum(1, keepdim=True)).log()
            joint = torch.sparse.mm(counts, log_phi.t()) - math.log(classes)  # [N, K]
            ll = torch.logsumexp(joint, 1)
            r = (joint - ll.unsqueeze(1)).exp()
        if known:
            r = torch.where(is_known, clamp, r)
        if float(ll.mean()) > best_ll:
            best, best_ll = r, float(ll.mean())
    return best, best_ll
