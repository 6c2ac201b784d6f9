"""The sentence VAE as a Pyro model and an amortized guide (Bowman et al. 2015).

    model:  z ~ p(z)  (scaled by beta),   x ~ p(x | z) = prod_t p(x_t | x_<t, z)   (LSTM)
    guide:  z ~ q(z | x)                  (LSTM encoder + a head from guides.py)

With ``bow`` > 0, training adds bow * sum_t log softmax(W z)[x_t], a bag-of-words prediction of
the sentence from z alone (Zhao et al. 2017): it makes z carry the sentence's words early.
It is a training term only, like word dropout: evaluation and decoding never see it.

p(z) is N(0, I), a two-level hierarchy, a mixture of Gaussians or a categorical code
(discrete.py, which also says how the discrete ones are trained).

Both live in one ``pyro.plate`` over the corpus with the minibatch as subsample, so the
ELBO is scaled to the corpus. ``z_dim = 0`` is the LSTM language-model baseline (no latent).
"""

import dataclasses

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine

from .discrete import (CategoricalPosterior, CategoricalPrior, ComponentPosterior, MixturePrior, discrete_site,
                       estimator, parse_latent, parse_mixture)
from ..errors import SVAEError
from .guides import SingleSite, guide_class, make_guide, widened
from .likelihood import Sentences
from .registration import module
from .decoding import bind_rerank
from .networks import Decoder, Encoder, word_dropout
from ..data.corpus import decoded_ids, make_batch
from ..data.tokenizers import PAD

BETA_FLOOR = 1e-4  # poutine.scale rejects 0, so KL schedules start here


def kl_weight(beta):
    """The KL weight of the latent sites: beta, at least BETA_FLOOR. A tensor beta (a traced step,
    training/step.py, whose caller applies the floor) is taken as it is, never read on the host."""
    return beta if isinstance(beta, torch.Tensor) else max(beta, BETA_FLOOR)


@dataclasses.dataclass
class ModelConfig:
    vocab_size: int
    emb_dim: int = 353
    hidden: int = 191
    z_dim: int = 13
    enc_hidden: int = 0  # 0: same as hidden
    enc_layers: int = 1
    dec_layers: int = 1
    bidirectional: bool = False
    pool: str = "last"  # the encoder's summary: last state, or max / mean over its outputs
    feed_z: bool = False
    tie: bool = False
    dropout: float = 0.0
    guide: str = "diag"
    prior: str = "standard"  # standard: N(0, I); hier: p(z1) p(z2 | z1); mixture:K (discrete.py)
    latent: str = "gaussian"  # or categorical:M,K, a discrete code (z_dim becomes M * K)
    discrete: str = "auto"  # how a discrete site is trained: enum, concrete or reinforce (discrete.py)
    straight_through: bool = False  # concrete: one-hot draws forward, relaxed gradients
    bow: float = 0.0  # weight of the bag-of-words term in training (0: none)
    skip: bool = False  # z also adds a linear term to every step's logits
    word_keep: float = 1.0  # word dropout of training; 0: the decoder is inputless everywhere


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I) at the site "z"."""

    sites = ("z",)

    def __init__(self, z_dim):
        super().__init__()
        self.z_dim = z_dim

    def sample(self, n, device, discrete=None, temperature=None):
        return pyro.sample("z", dist.Normal(torch.zeros(n, self.z_dim, device=device), 1.0).to_event(1))

    def split(self, z):
        """z [N, Z] -> {site: value}, to condition the model on z."""
        return {"z": z}


class HierarchicalPrior(nn.Module):
    """p(z1) p(z2 | z1): z1 ~ N(0, I), z2 ~ N(A z1 + b, diag(s(z1))^2), learned with the model;
    the decoder sees z = [z1, z2]."""

    sites = ("z1", "z2")

    def __init__(self, z_dim):
        super().__init__()
        self.d1 = z_dim // 2
        self.cond = nn.Linear(self.d1, 2 * (z_dim - self.d1))

    def sample(self, n, device, discrete=None, temperature=None):
        z1 = pyro.sample("z1", dist.Normal(torch.zeros(n, self.d1, device=device), 1.0).to_event(1))
        loc, scale = self.cond(z1).chunk(2, dim=-1)
        z2 = pyro.sample("z2", dist.Normal(loc, F.softplus(scale) + 1e-3).to_event(1))
        return torch.cat([z1, z2], dim=-1)

    def split(self, z):
        return {"z1": z[..., : self.d1], "z2": z[..., self.d1 :]}


def bag_of_words(logits, targets):
    """logits [..., N, V] (from z; enumerated dims on the left), targets [N, T] -> sum_t
    log softmax(logits)[x_t] over real tokens [..., N]."""
    log_p = logits.log_softmax(-1)
    log_p = log_p.gather(-1, targets.expand(*log_p.shape[:-1], targets.shape[-1]))
    return log_p.masked_fill(targets == PAD, 0.0).sum(-1)


PRIORS = {"standard": StandardNormalPrior, "hier": HierarchicalPrior}


def corpus_plate(name, n, size=None):
    """A plate over n sentences; with ``size`` they are a subsample of a corpus of that size, so
    that their log-densities are scaled to it."""
    if size is None:
        return pyro.plate(name, n)
    return pyro.plate(name, size, subsample=torch.arange(n))


class SentenceVAE(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.codes = parse_latent(c.latent) if c.z_dim > 0 else None  # (M, K) of a categorical code
        self.z_dim = self.codes[0] * self.codes[1] if self.codes else c.z_dim
        self.estimator = estimator(c.prior, c.latent, c.discrete) if c.z_dim > 0 else ""
        self.component = None  # q(c|x) of a mixture prior trained by concrete or reinforce
        self.decoder = Decoder(c.vocab_size, c.emb_dim, c.hidden, self.z_dim, c.dec_layers,
                               c.feed_z, c.tie, c.dropout, c.skip, inputless=c.word_keep == 0)
        self.bow = nn.Linear(self.z_dim, c.vocab_size) if c.z_dim > 0 and c.bow > 0 else None
        if c.z_dim > 0:
            self.encoder = Encoder(c.vocab_size, c.emb_dim, c.enc_hidden or c.hidden, c.enc_layers,
                                   c.bidirectional, c.dropout, c.pool)
            if self.codes:
                self.prior = CategoricalPrior(*self.codes)
                self.posterior = CategoricalPosterior(self.encoder.out_dim, *self.codes)
                return
            mixture = parse_mixture(c.prior)
            wanted, prior = guide_class(c.guide).prior, "standard" if mixture else c.prior
            if prior not in PRIORS or wanted != prior:
                raise SVAEError(f"guide {c.guide!r} goes with --prior {wanted}, not {c.prior!r}")
            self.prior = MixturePrior(c.z_dim, mixture) if mixture else PRIORS[c.prior](c.z_dim)
            self.posterior = make_guide(c.guide, self.encoder.out_dim, c.z_dim)
            if mixture and self.estimator in ("concrete", "reinforce"):
                self.component = ComponentPosterior(self.encoder.out_dim, mixture)

    @property
    def device(self):
        return self.decoder.out.weight.device

    def _plate(self, n, size):
        return corpus_plate("sentences", n, size)

    def model(self, batch=None, size=None, beta=1.0, word_keep=1.0, n=None, strategy=None, max_len=50,
              discrete=None, temperature=None):
        """p(x, z). With a batch, x is observed; without, n sentences are decoded with ``strategy``.
        discrete: the estimator of a discrete site during training (None: the marginal p(z))."""
        module("decoder", self.decoder)
        n = batch.size if batch is not None else n
        with self._plate(n, size):
            z = None
            if self.z_dim > 0:
                module("prior", self.prior)
                with poutine.scale(scale=kl_weight(beta)):
                    z = self.prior.sample(n, self.device, discrete, temperature)
            if batch is None:
                return pyro.sample("x", Sentences(self.decoder, z, strategy=strategy, max_len=max_len,
                                                  batch_size=n))
            if self.training and self.bow is not None:
                module("bow", self.bow)
                pyro.factor("bow", self.config.bow * bag_of_words(self.bow(z), batch.targets))
            inputs = word_dropout(batch.inputs, word_keep) if self.training else batch.inputs
            return pyro.sample("x", Sentences(self.decoder, z, inputs=inputs), obs=batch.targets)

    def guide(self, batch, size=None, beta=1.0, discrete=None, temperature=None, **kwargs):
        """q(z | x), under the same plate and the same KL scale as the model's latent sites."""
        if self.z_dim == 0:
            return None
        module("encoder", self.encoder)
        return self.guide_given(self.encoder(batch.targets, batch.lengths), size, beta,
                                discrete=discrete, temperature=temperature)

    def guide_given(self, h, size=None, beta=1.0, widen=1.0, discrete=None, temperature=None):
        """The guide's latent sites for given encoder summaries h [B, H] (semi-amortized inference
        refines h per sentence). widen != 1: a diagonal q's standard deviations times ``widen``
        (an overdispersed importance-sampling proposal). discrete concrete or reinforce: the
        discrete site (the mixture's c, or the code z) drawn as that estimator needs it."""
        module("posterior", self.posterior)
        n = h.shape[0]
        with self._plate(n, size):
            beta = kl_weight(beta)
            with poutine.scale(scale=beta):
                if widen != 1.0:
                    return pyro.sample("z", widened(self.posterior, h, widen))
                if discrete not in ("concrete", "reinforce"):
                    return self.posterior.sample(h)
                site_scale = beta * (size or n) / n  # what Pyro scales the site's log-densities by
                hard = self.config.straight_through
                if self.codes:
                    return discrete_site("z", self.posterior, h, discrete, temperature, hard, site_scale)
                module("component", self.component)
                discrete_site("c", self.component, h, discrete, temperature, hard, site_scale)
                return self.posterior.sample(h)

    @torch.no_grad()
    def component_posterior(self, batch, samples=16):
        """The posterior over a mixture prior's component [B, K]: q(c|x) where the guide has one
        (concrete, reinforce), else E_q(z|x) p(c | z) over ``samples`` draws (enum)."""
        if not isinstance(self.prior, MixturePrior):
            raise SVAEError("this run has no mixture prior (train with --prior mixture:K)")
        h = self.encoder(batch.targets, batch.lengths)
        if self.component is not None:
            return self.component(h).probs.squeeze(-2)
        z = self.guide_draws(batch, samples)[0]
        return self.prior.responsibilities(z).mean(1)

    @property
    def latent_sites(self):
        return self.prior.sites if self.z_dim > 0 else ()

    def latent_log_prob(self, trace):
        """The sum over the latent sites of a model (log p) or guide (log q) trace: [N]."""
        return sum(trace.nodes[s]["fn"].log_prob(trace.nodes[s]["value"]) for s in self.latent_sites)

    def latent_value(self, trace):
        """z [N, Z]: the values of a trace's latent sites, concatenated."""
        return torch.cat([trace.nodes[s]["value"] for s in self.latent_sites], dim=-1)

    def q(self, batch):
        """The variational distribution of a single-site guide: batch shape [B], event shape [Z]."""
        if not isinstance(self.posterior, SingleSite):
            raise SVAEError(f"the {self.config.guide} guide has no single distribution q(z|x)")
        return self.posterior(self.encoder(batch.targets, batch.lengths))

    def guide_draws(self, batch, k):
        """k draws z ~ q(z|x) per sentence through the guide: -> z [B, k, Z], log q [B, k]."""
        repeated = batch.repeat(k)
        trace = poutine.trace(self.guide).get_trace(repeated)
        return self.latent_value(trace).view(batch.size, k, -1), self.latent_log_prob(trace).view(batch.size, k)

    def decode(self, z=None, n=None, strategy=None, max_len=50):
        """The model conditioned on z [N, Z] (or drawing n codes from the prior when z is None), its
        x decoded by ``strategy``. -> (z or None for the LM, tokens [N, L]). A reranking beam
        (decoding.Beam) gets q(z|x') of its candidates from this model's guide."""
        strategy = bind_rerank(strategy, self._candidate_log_q)
        model = self.model if z is None else poutine.condition(self.model, data=self.prior.split(z))
        n = n if z is None else z.shape[0]
        trace = poutine.trace(model).get_trace(n=n, strategy=strategy, max_len=max_len)
        return self.latent_value(trace) if self.z_dim > 0 else None, trace.nodes["x"]["value"]

    def _candidate_log_q(self):
        """(tokens [N, L] as decoded, z [N, Z]) -> log q(z|x') of each row [N], for a reranking beam."""
        if self.z_dim == 0:
            raise SVAEError("--rerank needs q(z|x): a language model has no latent")
        if not isinstance(self.posterior, SingleSite):
            raise SVAEError(f"--rerank needs a single q(z|x): the {self.config.guide} guide has several sites")
        return lambda tokens, z: self.q(make_batch(decoded_ids(tokens)).to(self.device)).log_prob(z)

    def posterior_mean(self, batch, samples=64):
        """E_q[z] per sentence [B, Z]: exact where the family has a mean, else over ``samples`` draws."""
        if isinstance(self.posterior, SingleSite):
            try:
                return self.q(batch).mean
            except NotImplementedError:
                pass
        return self.guide_draws(batch, samples)[0].mean(1)
