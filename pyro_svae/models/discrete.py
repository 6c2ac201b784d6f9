"""Discrete latent variables: a mixture-of-Gaussians prior and a code of categorical variables.

    --prior mixture:K        c ~ Cat(pi),  z | c ~ N(mu_c, diag sigma_c^2)   (pi, mu, sigma learned)
    --latent categorical:M,K z = M one-hot variables with K classes each, uniform prior

Three ways to train through the discrete site (``--discrete``):

- ``enum``: c is enumerated in parallel in the model and summed out exactly by ``TraceEnum_ELBO``;
  the guide is q(z|x) alone (mixture prior only).
- ``concrete``: the guide draws c from the Concrete / Gumbel-softmax relaxation of q(c|x)
  (Maddison et al. 2017, Jang et al. 2017) at a temperature that falls during training; the
  component parameters are mixed by the relaxed c. The KL of c is the exact categorical one.
- ``reinforce``: the guide draws c exactly and ``TraceGraph_ELBO`` scores it (the score-function
  estimator) with a learned, input-dependent baseline (Mnih and Gregor 2014).

Outside training (evaluation, decoding) the mixture prior is one site, the marginal
p(z) = sum_c pi_c N(z; mu_c, sigma_c), and the categorical code is drawn exactly."""

import itertools
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.kl import register_kl

from ..errors import SVAEError
from .guides import SingleSite

ESTIMATORS = ("enum", "concrete", "reinforce")
MAX_COMPONENTS = 1000


class OneHotCode(TorchDistribution):
    """M independent categorical variables with K classes each, as one flat one-hot vector:
    logits [..., M, K] -> batch shape [...], event shape [M * K].

    temperature None: exact one-hot draws (enumerable, not reparameterized). A temperature:
    relaxed draws on the simplex (Concrete), reparameterized; ``straight_through``: one-hot
    forward, relaxed gradient. ``log_prob(v)`` is sum_mk v_mk log pi_mk, the exact log-probability
    of a one-hot v; the registered KL is the exact categorical KL at every temperature."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.real_vector

    def __init__(self, logits, temperature=None, straight_through=False, validate_args=None):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.temperature, self.straight_through = temperature, straight_through
        self.m, self.k = logits.shape[-2:]
        self.has_rsample = temperature is not None
        super().__init__(logits.shape[:-2], torch.Size([self.m * self.k]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        logits = self.logits.expand(torch.Size(batch_shape) + (self.m, self.k))
        return OneHotCode(logits, self.temperature, self.straight_through)

    @property
    def probs(self):
        return self.logits.exp()

    @property
    def mean(self):
        return self.probs.reshape(self.batch_shape + self.event_shape)

    def _flat(self, y):
        return y.reshape(y.shape[:-2] + (self.m * self.k,))

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            if self.temperature is not None:
                return self.rsample(sample_shape)
            classes = dist.Categorical(logits=self.logits).sample(sample_shape)
            return self._flat(F.one_hot(classes, self.k).to(self.logits.dtype))

    def rsample(self, sample_shape=torch.Size()):
        if self.temperature is None:
            raise NotImplementedError("an exact one-hot draw has no reparameterization")
        shape = torch.Size(sample_shape) + self.logits.shape
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device).clamp(1e-10, 1 - 1e-10)
        y = torch.softmax((self.logits - torch.log(-torch.log(u))) / self.temperature, dim=-1)
        if self.straight_through:
            hard = F.one_hot(y.argmax(-1), self.k).to(y.dtype)
            y = hard + y - y.detach()
        return self._flat(y)

    def log_prob(self, value):
        v = value.reshape(value.shape[:-1] + (self.m, self.k))
        return (v * self.logits).sum((-1, -2))

    def kl_units(self, other):
        """KL(self || other) per variable: [..., M]."""
        return (self.probs * (self.logits - other.logits)).sum(-1)

    def enumerate_support(self, expand=True):
        """Every code, K^M of them: [K^M, *batch (1s unless expand), M * K]."""
        codes = torch.tensor(list(itertools.product(range(self.k), repeat=self.m)), device=self.logits.device)
        values = self._flat(F.one_hot(codes, self.k).to(self.logits.dtype))
        values = values.reshape((-1,) + (1,) * len(self.batch_shape) + self.event_shape)
        return values.expand((-1,) + self.batch_shape + self.event_shape) if expand else values


@register_kl(OneHotCode, OneHotCode)
def _kl_codes(q, p):
    return q.kl_units(p).sum(-1)


class MixturePrior(nn.Module):
    """p(c) p(z | c): c ~ Cat(softmax(logits)), z | c ~ N(c @ loc, diag(c @ scale)^2), learned.
    The components start at N(0, I) draws around the origin, unit scale, equal weights."""

    sites = ("z",)

    def __init__(self, z_dim, k):
        super().__init__()
        self.k = k
        self.logits = nn.Parameter(torch.zeros(k))
        self.loc = nn.Parameter(torch.randn(k, z_dim))
        self.raw_scale = nn.Parameter(torch.full((k, z_dim), math.log(math.e - 1)))  # softplus -> 1

    def scale(self):
        return F.softplus(self.raw_scale) + 1e-3

    def weights(self):
        """pi [K]."""
        return torch.softmax(self.logits, -1)

    def component(self, c):
        """p(z | c) for a one-hot (or relaxed) c [..., K]: N(c @ loc, diag(c @ scale)^2)."""
        return dist.Normal(c @ self.loc, c @ self.scale()).to_event(1)

    def marginal(self, n):
        """p(z) = sum_c pi_c N(z; mu_c, sigma_c), batch shape [n]."""
        normal = dist.Normal(self.loc.expand(n, -1, -1), self.scale().expand(n, -1, -1)).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits.expand(n, -1)), normal)

    def sample(self, n, device, discrete=None, temperature=None):
        """z [n, Z]. discrete None: the marginal as one site; else c then z | c, with c enumerated
        (enum) or supplied by the guide (concrete, reinforce)."""
        if discrete is None:
            return pyro.sample("z", self.marginal(n))
        infer = {"enumerate": "parallel"} if discrete == "enum" else {}
        c = pyro.sample("c", OneHotCode(self.logits.expand(n, 1, -1)), infer=infer)
        return pyro.sample("z", self.component(c))

    def component_log_prob(self, z):
        """log pi_c + log N(z; mu_c, sigma_c) for every component: z [..., Z] -> [..., K]."""
        normal = dist.Normal(self.loc, self.scale()).to_event(1)
        return torch.log_softmax(self.logits, -1) + normal.log_prob(z.unsqueeze(-2))

    def responsibilities(self, z):
        """p(c | z) [..., K] (Bayes' rule; x adds nothing once z is known)."""
        return torch.softmax(self.component_log_prob(z), -1)

    def sample_component(self, k, n):
        """n draws z ~ p(z | c = k): [n, Z]."""
        return dist.Normal(self.loc[k], self.scale()[k]).to_event(1).sample((n,))

    def split(self, z):
        return {"z": z}


class CategoricalPrior(nn.Module):
    """p(z): M uniform categorical variables with K classes, one flat one-hot code [M * K]."""

    sites = ("z",)

    def __init__(self, m, k):
        super().__init__()
        self.m, self.k = m, k
        self.register_buffer("logits", torch.zeros(m, k))

    def sample(self, n, device, discrete=None, temperature=None):
        return pyro.sample("z", OneHotCode(self.logits.expand(n, -1, -1)))

    def split(self, z):
        return {"z": z}


class Baseline(nn.Module):
    """A learned control variate for the score-function estimator: an MLP of the (detached)
    encoder summary, in nats per sentence, times the site's scale (beta x corpus / batch), so
    that it regresses the downstream cost at its true size. Input: (h [B, H], scale)."""

    def __init__(self, in_dim, hidden=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, inputs):
        h, scale = inputs
        return scale * self.net(h).squeeze(-1)


class CategoricalPosterior(SingleSite):
    """q(z|x) for the categorical code: M x K logits from the encoder summary h [B, H]."""

    def __init__(self, in_dim, m, k):
        super().__init__()
        self.m, self.k = m, k
        self.logits = nn.Linear(in_dim, m * k)
        self.baseline = Baseline(in_dim)

    def forward(self, h, temperature=None, straight_through=False):
        return OneHotCode(self.logits(h).view(-1, self.m, self.k), temperature, straight_through)


class ComponentPosterior(nn.Module):
    """q(c|x) for the mixture prior's component (concrete, reinforce): K logits from h [B, H]."""

    def __init__(self, in_dim, k):
        super().__init__()
        self.logits = nn.Linear(in_dim, k)
        self.baseline = Baseline(in_dim)

    def forward(self, h, temperature=None, straight_through=False):
        return OneHotCode(self.logits(h).unsqueeze(-2), temperature, straight_through)


def discrete_site(name, head, h, estimator, temperature, straight_through, scale):
    """Draw the guide's discrete site ``name`` from ``head`` (h [B, H]) as ``estimator`` needs it:
    relaxed (concrete) or exact with the head's baseline (reinforce)."""
    if estimator == "concrete":
        return pyro.sample(name, head(h, temperature, straight_through))
    baseline = {"nn_baseline": head.baseline, "nn_baseline_input": (h.detach(), scale)}
    return pyro.sample(name, head(h), infer={"baseline": baseline})


def parse_mixture(prior):
    """'mixture:K' -> K; any other prior -> 0."""
    name, _, arg = prior.partition(":")
    if name != "mixture":
        return 0
    try:
        k = int(arg)
    except ValueError:
        raise SVAEError(f"--prior {prior!r}: expected mixture:K, K the number of components (e.g. mixture:10)") from None
    if not 2 <= k <= MAX_COMPONENTS:
        raise SVAEError(f"--prior {prior!r}: K must lie in [2, {MAX_COMPONENTS}]")
    return k


def parse_latent(latent):
    """'gaussian' -> None; 'categorical:M,K' -> (M, K)."""
    if latent == "gaussian":
        return None
    name, _, arg = latent.partition(":")
    try:
        m, k = (int(v) for v in arg.split(","))
    except ValueError:
        m = k = 0
    if name != "categorical" or m < 1 or k < 2:
        raise SVAEError(f"--latent {latent!r}: use gaussian or categorical:M,K (M >= 1 variables, K >= 2 classes)")
    if m * k > 100_000:
        raise SVAEError(f"--latent {latent!r}: M x K = {m * k} is too large a code")
    return m, k


def estimator(prior, latent, discrete):
    """The discrete estimator a configuration trains with: '' (no discrete site), enum, concrete or
    reinforce. 'auto': enum for a mixture prior, concrete for a categorical code."""
    codes, mixture = parse_latent(latent), parse_mixture(prior)
    if discrete not in ESTIMATORS + ("auto",):
        raise SVAEError(f"--discrete {discrete!r}: use one of auto, {', '.join(ESTIMATORS)}")
    if not codes and not mixture:
        if discrete != "auto":
            raise SVAEError(f"--discrete {discrete}: needs a discrete latent (--prior mixture:K or --latent categorical:M,K)")
        return ""
    if codes:
        if prior != "standard":
            raise SVAEError(f"--latent {latent} has its own uniform prior; leave --prior at standard")
        if discrete == "enum":
            m, k = codes
            raise SVAEError(f"--latent {latent} --discrete enum would run the decoder on all K^M = {k ** m:,} "
                            "codes of every sentence; train it with --discrete concrete or reinforce")
        return "concrete" if discrete == "auto" else discrete
    return "enum" if discrete == "auto" else discrete


def parse_tau(spec):
    """'START,END,STEPS' -> step -> temperature, falling exponentially from START to END over
    STEPS steps, then END (Jang et al. 2017)."""
    try:
        start, end, steps = (float(v) for v in spec.split(","))
    except ValueError:
        start = end = steps = float("nan")
    if not (math.isfinite(start) and math.isfinite(end) and start >= end > 0 and steps >= 0):
        raise SVAEError(f"--tau {spec!r}: expected START,END,STEPS with START >= END > 0 (e.g. 1.0,0.5,2000)")
    return lambda step: end if step >= steps else start * (end / start) ** (step / max(steps, 1))
