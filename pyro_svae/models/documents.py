"""Documents as chains of sentence latents (``--prior chain``): a linear-Gaussian state-space model
whose observations are sentences.

    model:  z_1 ~ N(0, I),  z_t | z_{t-1} ~ N(z_{t-1} M, diag(s^2))     (M, s learned; ||M||_2 < 1)
            x_t ~ p(x_t | z_t)   (the sentence VAE's decoder, each sentence on its own z_t)
    guides: doc-meanfield   q(z_t | x_t), the sentence encoder alone, independent across t
            doc-structured  q(z_t | z_{t-1}, x_{t:T}): a backward GRU over the sentence encodings
                            and a combiner (Krishnan et al. 2017, as Pyro's examples/dmm.py)
            doc-conjugate   the encoder's Gaussian potential per sentence, psi_t(z_t) = N(m_t; z_t,
                            diag(v_t)), and the exact posterior p(z) prod_t psi_t(z_t) / Z of the
                            chain given them (Kalman smoothing by Pyro's GaussianHMM; Johnson et al. 2016)

z is one sample site per document, of event shape [T, Z] (T: the batch's longest document), in a
``pyro.plate`` over documents scaled to the corpus; the slots past a document's end are masked out
of every log-density. The sentences' log-likelihoods sit in their own plate, scaled alike."""

import dataclasses
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import TorchDistribution, constraints
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import SVAEError
from .likelihood import Sentences
from .networks import word_dropout
from .registration import module
from .vae import BETA_FLOOR, SentenceVAE, bag_of_words, corpus_plate

DOCUMENT_GUIDES = ("doc-meanfield", "doc-structured", "doc-conjugate")
STABLE = 0.99  # the transition's spectral norm is kept at most this


def is_chain_prior(prior):
    return prior == "chain"


class GaussianChain(TorchDistribution):
    """p(z_1..T) = N(z_1; 0, I) prod_t N(z_t; z_{t-1} M, diag(s^2)) on the slots of ``mask`` [D, T]
    (a prefix of each row): batch shape [D], event shape [T, Z]."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, matrix, scale, mask, validate_args=None):
        self.matrix, self.scale, self.mask = matrix, scale, mask  # [Z, Z], [Z], [D, T] bool
        super().__init__(mask.shape[:-1], mask.shape[-1:] + matrix.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return GaussianChain(self.matrix, self.scale, self.mask.expand(*batch_shape, self.mask.shape[-1]))

    def conditionals(self, z):
        """The loc and scale of each z_t given z_{t-1}: [D, T, Z] each."""
        loc = torch.cat([torch.zeros_like(z[..., :1, :]), z[..., :-1, :] @ self.matrix], dim=-2)
        first = torch.ones_like(self.scale).expand(z.shape[:-2] + (1, z.shape[-1]))
        scale = torch.cat([first, self.scale.expand(z.shape[:-2] + (z.shape[-2] - 1, z.shape[-1]))], dim=-2)
        return loc, scale

    def step_log_prob(self, z):
        """log p(z_t | z_{t-1}) per slot [D, T], 0 on the masked slots."""
        loc, scale = self.conditionals(z)
        return dist.Normal(loc, scale).log_prob(z).sum(-1) * self.mask

    def log_prob(self, z):
        return self.step_log_prob(z).sum(-1)

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape
        steps = []
        z = torch.zeros(shape + self.matrix.shape[-1:], device=self.matrix.device, dtype=self.matrix.dtype)
        for t in range(self.event_shape[0]):
            noise = torch.randn_like(z)
            z = noise if t == 0 else z @ self.matrix + self.scale * noise
            steps.append(z)
        return torch.stack(steps, dim=-2)

    def detached(self):
        return GaussianChain(self.matrix.detach(), self.scale.detach(), self.mask)

    def hmm(self, loc, scale):
        """The chain observed through the potentials N(loc_t; z_t, diag(scale_t^2)) on the masked
        slots, as Pyro's GaussianHMM (a padded slot observes a constant: matrix 0, value 0, scale 1).
        -> (GaussianHMM, the value it observes [D, T, Z], the log-density its padded slots add [D])."""
        Z, T = self.matrix.shape[-1], self.mask.shape[-1]
        m = self.mask.unsqueeze(-1).to(loc.dtype)
        eye = torch.eye(Z, device=loc.device, dtype=loc.dtype)
        transition = torch.cat([torch.zeros_like(eye)[None], self.matrix.expand(T - 1, Z, Z)], dim=0)
        noise = torch.cat([torch.ones_like(self.scale)[None], self.scale.expand(T - 1, Z)], dim=0)
        hmm = dist.GaussianHMM(dist.Normal(torch.zeros_like(self.scale), 1.0).to_event(1), transition,
                               dist.Normal(torch.zeros_like(noise), noise).to_event(1),
                               eye * m.unsqueeze(-1), dist.Normal(torch.zeros_like(loc), scale * m + (1 - m)).to_event(1))
        padded = (~self.mask).sum(-1).to(loc.dtype) * (-0.5 * Z * math.log(2 * math.pi))
        return hmm, loc * m, padded


class ChainPrior(nn.Module):
    """The learned chain: M = W scaled to a spectral norm of at most 0.99 (a stable chain) and s =
    softplus. Starts at M = I / 2, s^2 = 3/4: every z_t is N(0, I) a priori, each step correlated."""

    def __init__(self, z_dim):
        super().__init__()
        self.weight = nn.Parameter(0.5 * torch.eye(z_dim))
        self.raw_scale = nn.Parameter(torch.full((z_dim,), math.log(math.expm1(math.sqrt(0.75)))))

    @property
    def matrix(self):
        norm = torch.linalg.matrix_norm(self.weight, 2)
        return self.weight * (STABLE / norm).clamp(max=1.0)

    def forward(self, mask):
        return GaussianChain(self.matrix, F.softplus(self.raw_scale) + 1e-4, mask)


class Combiner(nn.Module):
    """Krishnan et al.'s combiner: h = (tanh(W z_{t-1} + b) + g_t) / 2, q(z_t | .) = N(mu(h), sigma(h)^2)."""

    def __init__(self, z_dim, hidden):
        super().__init__()
        self.from_z = nn.Linear(z_dim, hidden)
        self.loc = nn.Linear(hidden, z_dim)
        self.scale = nn.Linear(hidden, z_dim)

    def forward(self, z_prev, context):
        h = 0.5 * (torch.tanh(self.from_z(z_prev)) + context)
        return self.loc(h), F.softplus(self.scale(h)) + 1e-5


class StructuredPosterior(TorchDistribution):
    """q(z_1..T) = prod_t q(z_t | z_{t-1}, x_{t:T}) by ``combiner`` over the backward context [D, T, H],
    from z_0 = ``start`` [Z]; masked like GaussianChain. Drawn sequentially, scored in parallel."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, combiner, context, start, mask):
        self.combiner, self.context, self.start, self.mask = combiner, context, start, mask
        super().__init__(mask.shape[:-1], mask.shape[-1:] + start.shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError("the structured posterior is one per document")
        return self

    def step_log_prob(self, z):
        previous = torch.cat([self.start.expand(z.shape[:-2] + (1, z.shape[-1])), z[..., :-1, :]], dim=-2)
        loc, scale = self.combiner(previous, self.context)
        return dist.Normal(loc, scale).log_prob(z).sum(-1) * self.mask

    def log_prob(self, z):
        return self.step_log_prob(z).sum(-1)

    def rsample(self, sample_shape=torch.Size()):
        if sample_shape:
            raise NotImplementedError("draw several documents by repeating them in the batch")
        z, steps = self.start.expand(self.batch_shape + self.start.shape), []
        for t in range(self.event_shape[0]):
            loc, scale = self.combiner(z, self.context[..., t, :])
            z = loc + scale * torch.randn_like(loc)
            steps.append(z)
        return torch.stack(steps, dim=-2)


class ConjugatePosterior(TorchDistribution):
    """q(z) = p(z) prod_t psi_t(z_t) / Z: the chain ``prior`` (a GaussianChain) given the Gaussian
    potentials psi_t(z_t) = N(loc_t; z_t, diag(scale_t^2)) [D, T, Z], exactly (Kalman smoothing).
    ``log_normalizer`` [D] is log Z; draws are reparameterized (forward filtering, backward sampling)."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, prior, loc, scale):
        self.prior, self.loc, self.scale = prior, loc, scale
        self.hmm, self.observed, padded = prior.hmm(loc, scale)
        self.log_normalizer = self.hmm.log_prob(self.observed) - padded
        super().__init__(prior.batch_shape, prior.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError("the conjugate posterior is one per document")
        return self

    def potentials(self, z):
        """sum_t log psi_t(z_t) over the masked slots [D]."""
        return (dist.Normal(self.loc, self.scale).log_prob(z).sum(-1) * self.prior.mask).sum(-1)

    def log_prob(self, z):
        return self.prior.log_prob(z) + self.potentials(z) - self.log_normalizer

    def rsample(self, sample_shape=torch.Size()):
        return self.hmm.rsample_posterior(self.observed, sample_shape)


def to_grid(values, slots, shape, fill=0.0):
    """Per-sentence rows [S, K] into the [D, T, K] grid at ``slots`` (the rest ``fill``)."""
    D, T = shape
    grid = values.new_full((D * T, values.shape[-1]), fill)
    return grid.index_copy(0, slots, values).view(D, T, -1)


class ChainVAE(nn.Module):
    """The document model of ``config`` (``prior="chain"``, ``guide`` one of DOCUMENT_GUIDES): the
    sentence VAE's encoder, diagonal head and decoder (``self.sentence``) under the chain prior."""

    def __init__(self, config):
        super().__init__()
        if config.guide not in DOCUMENT_GUIDES:
            raise SVAEError(f"--prior chain: use --guide {', '.join(DOCUMENT_GUIDES)}, not {config.guide!r}")
        self.config, self.kind, self.z_dim = config, config.guide, config.z_dim
        self.sentence = SentenceVAE(dataclasses.replace(config, guide="diag", prior="standard", latent="gaussian"))
        self.prior = ChainPrior(config.z_dim)
        if self.kind == "doc-structured":
            H = self.sentence.encoder.out_dim
            self.backward_rnn = nn.GRU(H, H, batch_first=True)
            self.combiner = Combiner(config.z_dim, H)
            self.start = nn.Parameter(torch.zeros(config.z_dim))

    @property
    def device(self):
        return self.sentence.device

    @property
    def decoder(self):
        return self.sentence.decoder

    def model(self, batch, size=None, beta=1.0, word_keep=1.0, **kwargs):
        """p(x, z) of a DocumentBatch: the chain over each document's slots, each sentence on its z_t."""
        module("decoder", self.decoder)
        module("prior", self.prior)
        D, s = batch.size, batch.sentences
        with corpus_plate("documents", D, size), poutine.scale(scale=max(beta, BETA_FLOOR)):
            z = pyro.sample("z", self.prior(batch.mask))
        z_s = z.reshape(-1, self.z_dim)[batch.slots.to(z.device)]  # [S, Z]
        with pyro.plate("sentences", s.size), poutine.scale(scale=(size or D) / D):
            return self.observe(z_s, s, word_keep)

    def observe(self, z, s, word_keep=1.0):
        """The sentences ``s`` (a Batch [S, L]) observed given their z [S, Z], inside the sentence plate."""
        if self.training and self.sentence.bow is not None:
            module("bow", self.sentence.bow)
            pyro.factor("bow", self.config.bow * bag_of_words(self.sentence.bow(z), s.targets))
        inputs = word_dropout(s.inputs, word_keep) if self.training else s.inputs
        return pyro.sample("x", Sentences(self.decoder, z, inputs=inputs), obs=s.targets)

    def guide(self, batch, size=None, beta=1.0, params=None, **kwargs):
        """q(z | x) of the chosen family, under the model's plate and KL scale. ``params``: the family's
        per-document parameters (``local_params``; refined per document) instead of the encoder's."""
        module("encoder", self.sentence.encoder)
        if self.kind == "doc-structured":
            module("backward_rnn", self.backward_rnn)
            module("combiner", self.combiner)
        else:
            module("posterior", self.sentence.posterior)
        q = self.q_given(batch, params if params is not None else self.local_params(batch))
        with corpus_plate("documents", batch.size, size), poutine.scale(scale=max(beta, BETA_FLOOR)):
            return pyro.sample("z", q)

    def potentials(self, batch):
        """The sentence head's Gaussian per sentence, in the grid: loc, scale [D, T, Z] (0 and 1 off the mask)."""
        head = self.sentence.posterior(self.encode(batch)).base_dist
        slots, shape = batch.slots.to(head.loc.device), (batch.size, batch.steps)
        return to_grid(head.loc, slots, shape), to_grid(head.scale, slots, shape, 1.0)

    def encode(self, batch):
        """The sentence encoder's summary of each sentence: h [S, H]."""
        s = batch.sentences
        return self.sentence.encoder(s.targets, s.lengths)

    def local_params(self, batch):
        """The guide's per-document parameters from the encoder: {"loc", "scale"} [D, T, Z] (the
        sentence head's Gaussians: q's own for doc-meanfield, the potentials for doc-conjugate) or
        {"context"} [D, T, H] (doc-structured's backward states)."""
        if self.kind == "doc-structured":
            return {"context": self.backward_context(batch, self.encode(batch))}
        loc, scale = self.potentials(batch)
        return {"loc": loc, "scale": scale}

    def q_given(self, batch, params):
        """The guide's distribution over z [D, T, Z] given its per-document parameters."""
        mask = batch.mask
        if self.kind == "doc-meanfield":
            return dist.Normal(params["loc"], params["scale"]).mask(mask.unsqueeze(-1)).to_event(2)
        if self.kind == "doc-conjugate":
            return ConjugatePosterior(self.prior(mask), params["loc"], params["scale"])
        return StructuredPosterior(self.combiner, params["context"], self.start, mask)

    def q(self, batch):
        """The guide's distribution over z [D, T, Z] for a DocumentBatch."""
        return self.q_given(batch, self.local_params(batch))

    def backward_context(self, batch, h):
        """g_t: the backward GRU's state after reading sentences T..t of each document [D, T, H]."""
        D, T = batch.size, batch.steps
        sizes = batch.sizes
        step = batch.slots % T
        reverse = (batch.slots - step) + (sizes.repeat_interleave(sizes) - 1 - step)  # slot of t in reversed order
        reverse = reverse.to(h.device)
        grid = to_grid(h, reverse, (D, T))
        packed = pack_padded_sequence(grid, sizes, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.backward_rnn(packed)[0], batch_first=True, total_length=T)
        return to_grid(out.reshape(D * T, -1)[reverse], batch.slots.to(h.device), (D, T))
