"""Variational families q(z | x): small heads on the encoder's summary h, chosen by name.

Each maps h [B, H] to a Pyro distribution over z with batch shape [B] and event shape [Z].
To add one: write an nn.Module with ``__init__(in_dim, z_dim, arg)`` and ``forward(h)``,
then add a line to ``GUIDES``."""

import torch
import torch.nn as nn
import torch.nn.functional as F
import pyro.distributions as dist

from .errors import SVAEError


class DiagonalNormal(nn.Module):
    """Mean-field Gaussian (Bowman et al.): q(z|x) = N(mu(h), diag(sigma(h)^2))."""

    def __init__(self, in_dim, z_dim, arg=None):
        super().__init__()
        self.loc = nn.Linear(in_dim, z_dim)
        self.scale = nn.Linear(in_dim, z_dim)

    def forward(self, h):
        return dist.Normal(self.loc(h), F.softplus(self.scale(h)) + 1e-5).to_event(1)


class LowRankNormal(nn.Module):
    """Gaussian with covariance diag(d(h)) + W(h) W(h)^T, W of rank R."""

    def __init__(self, in_dim, z_dim, rank=None):
        super().__init__()
        self.z_dim, self.rank = z_dim, int(rank or 2)
        self.loc = nn.Linear(in_dim, z_dim)
        self.diag = nn.Linear(in_dim, z_dim)
        self.factor = nn.Linear(in_dim, z_dim * self.rank)

    def forward(self, h):
        W = self.factor(h).view(-1, self.z_dim, self.rank)
        return dist.LowRankMultivariateNormal(self.loc(h), W, F.softplus(self.diag(h)) + 1e-5)


class FullRankNormal(nn.Module):
    """Gaussian with a full lower-triangular Cholesky factor L(h) (positive diagonal)."""

    def __init__(self, in_dim, z_dim, arg=None):
        super().__init__()
        self.z_dim = z_dim
        self.loc = nn.Linear(in_dim, z_dim)
        self.tril = nn.Linear(in_dim, z_dim * z_dim)

    def forward(self, h):
        raw = self.tril(h).view(-1, self.z_dim, self.z_dim)
        diag = F.softplus(torch.diagonal(raw, dim1=-2, dim2=-1)) + 1e-5
        L = torch.tril(raw, diagonal=-1) + torch.diag_embed(diag)
        return dist.MultivariateNormal(self.loc(h), scale_tril=L)


GUIDES = {
    "diag": DiagonalNormal,
    "lowrank": LowRankNormal,
    "fullrank": FullRankNormal,
}


def make_guide(spec, in_dim, z_dim):
    """'diag', 'lowrank:4', 'fullrank' -> the head module."""
    name, _, arg = spec.partition(":")
    if name not in GUIDES:
        raise SVAEError(f"unknown guide {spec!r}; valid guides: {', '.join(GUIDES)}")
    try:
        return GUIDES[name](in_dim, z_dim, arg or None)
    except ValueError:
        raise SVAEError(f"bad guide argument in {spec!r} (expected e.g. lowrank:4)") from None
