"""Variational families q(z | x): small heads on the encoder's summary h, chosen by name.

A head's ``sample(h)`` draws its latent sites with ``pyro.sample`` and returns z [B, Z]. The
single-site families also give the distribution itself, ``head(h)`` (batch [B], event [Z]).

To add a family: write an nn.Module with ``__init__(in_dim, z_dim, arg)`` (``arg`` is the text
after the colon in ``name:arg``, or None) and ``forward(h)`` returning a distribution over z,
subclassing ``SingleSite``; then add one line to ``GUIDES``."""

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SVAEError


class SingleSite(nn.Module):
    """A guide with one latent site "z" under the standard normal prior."""

    prior = "standard"
    point_estimate = False

    def sample(self, h):
        return pyro.sample("z", self(h))


class DiagonalNormal(SingleSite):
    """Mean-field Gaussian (Bowman et al.): q(z|x) = N(mu(h), diag(sigma(h)^2))."""

    def __init__(self, in_dim, z_dim, arg=None):
        super().__init__()
        self.loc = nn.Linear(in_dim, z_dim)
        self.scale = nn.Linear(in_dim, z_dim)

    def forward(self, h):
        return dist.Normal(self.loc(h), F.softplus(self.scale(h)) + 1e-5).to_event(1)


class LowRankNormal(SingleSite):
    """Gaussian with covariance diag(d(h)) + W(h) W(h)^T, W of rank R (``lowrank:R``)."""

    def __init__(self, in_dim, z_dim, rank=None):
        super().__init__()
        self.z_dim, self.rank = z_dim, int(rank or 2)
        self.loc = nn.Linear(in_dim, z_dim)
        self.diag = nn.Linear(in_dim, z_dim)
        self.factor = nn.Linear(in_dim, z_dim * self.rank)

    def forward(self, h):
        W = self.factor(h).view(*h.shape[:-1], self.z_dim, self.rank)
        return dist.LowRankMultivariateNormal(self.loc(h), W, F.softplus(self.diag(h)) + 1e-5)


class FullRankNormal(SingleSite):
    """Gaussian with a full lower-triangular Cholesky factor L(h) (positive diagonal)."""

    def __init__(self, in_dim, z_dim, arg=None):
        super().__init__()
        self.z_dim = z_dim
        self.loc = nn.Linear(in_dim, z_dim)
        self.tril = nn.Linear(in_dim, z_dim * z_dim)

    def forward(self, h):
        raw = self.tril(h).view(*h.shape[:-1], self.z_dim, self.z_dim)
        diag = F.softplus(torch.diagonal(raw, dim1=-2, dim2=-1)) + 1e-5
        return dist.MultivariateNormal(self.loc(h), scale_tril=torch.tril(raw, -1) + torch.diag_embed(diag))


class InverseAutoregressiveFlow(SingleSite):
    """A diagonal Gaussian followed by K affine autoregressive flows conditioned on h
    (Kingma et al. 2016), with the order of z reversed between flows (``iaf:K``)."""

    def __init__(self, in_dim, z_dim, flows=None):
        super().__init__()
        if z_dim < 2:
            raise SVAEError("the iaf guide needs --z-dim of at least 2")
        self.base = DiagonalNormal(in_dim, z_dim)
        self.flows = nn.ModuleList(T.conditional_affine_autoregressive(z_dim, in_dim, hidden_dims=[4 * z_dim])
                                   for _ in range(int(flows or 2)))
        self.register_buffer("reverse", torch.arange(z_dim - 1, -1, -1))

    def forward(self, h):
        transforms = []
        for i, flow in enumerate(self.flows):
            if i:
                transforms.append(T.Permute(self.reverse))
            transforms.append(flow.condition(h))
        return dist.TransformedDistribution(self.base(h), transforms)


class PointEstimate(SingleSite):
    """q(z|x) = delta(mu(h)): a deterministic autoencoder whose KL becomes -log p(z) (``delta``)."""

    point_estimate = True

    def __init__(self, in_dim, z_dim, arg=None):
        super().__init__()
        self.loc = nn.Linear(in_dim, z_dim)

    def forward(self, h):
        return dist.Delta(self.loc(h), event_dim=1)


class HierarchicalMeanField(nn.Module):
    """q(z1|x) q(z2|x) for the hierarchical prior p(z1) p(z2|z1) (``hier-meanfield``)."""

    prior = "hier"
    point_estimate = False

    def __init__(self, in_dim, z_dim, arg=None):
        super().__init__()
        self.d1 = z_dim // 2
        self.q1 = DiagonalNormal(in_dim, self.d1)
        self.q2 = DiagonalNormal(self._context(in_dim), z_dim - self.d1)

    def _context(self, in_dim):
        return in_dim

    def _q2(self, h, z1):
        return self.q2(h)

    def sample(self, h):
        z1 = pyro.sample("z1", self.q1(h))
        z2 = pyro.sample("z2", self._q2(h, z1))
        return torch.cat([z1, z2], dim=-1)


class HierarchicalStructured(HierarchicalMeanField):
    """q(z1|x) q(z2|z1, x): the second level sees the first draw (``hier-structured``)."""

    def _context(self, in_dim):
        return in_dim + self.d1

    def _q2(self, h, z1):
        return self.q2(torch.cat([h, z1], dim=-1))


GUIDES = {
    "diag": DiagonalNormal,
    "lowrank": LowRankNormal,
    "fullrank": FullRankNormal,
    "iaf": InverseAutoregressiveFlow,
    "delta": PointEstimate,
    "hier-meanfield": HierarchicalMeanField,
    "hier-structured": HierarchicalStructured,
}


def widened(posterior, h, factor):
    """The diag guide's q(z|x) for h [B, H] with its standard deviations multiplied by ``factor``."""
    if not isinstance(posterior, DiagonalNormal):
        raise SVAEError("widening q(z|x) needs the diag guide")
    q = posterior(h).base_dist
    return dist.Normal(q.loc, q.scale * factor).to_event(1)


def guide_class(spec):
    name = spec.partition(":")[0]
    if name not in GUIDES:
        raise SVAEError(f"unknown guide {spec!r}; valid guides: {', '.join(GUIDES)} (lowrank:R, iaf:K)")
    return GUIDES[name]


def make_guide(spec, in_dim, z_dim):
    """'diag', 'lowrank:4', 'iaf:2', 'hier-structured', ... -> the head module."""
    arg = spec.partition(":")[2]
    try:
        return guide_class(spec)(in_dim, z_dim, arg or None)
    except ValueError:
        raise SVAEError(f"bad guide argument in {spec!r} (expected e.g. lowrank:4 or iaf:2)") from None
