"""The sentence VAE as a Pyro model and an amortized guide (Bowman et al. 2015).

    model:  z ~ N(0, I)  (scaled by beta),   x ~ p(x | z) = prod_t p(x_t | x_<t, z)   (LSTM)
    guide:  z ~ q(z | x)                      (LSTM encoder + a head from guides.py)

Both live in one ``pyro.plate`` over the corpus with the minibatch as subsample, so the
ELBO is scaled to the corpus. ``z_dim = 0`` is the LSTM language-model baseline (no latent).
"""

import dataclasses

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine

from .guides import make_guide
from .likelihood import Sentences
from .networks import Decoder, Encoder, word_dropout

BETA_FLOOR = 1e-4  # poutine.scale rejects 0, so KL schedules start here


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
    feed_z: bool = False
    tie: bool = False
    dropout: float = 0.0
    guide: str = "diag"


class SentenceVAE(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.z_dim = c.z_dim
        self.decoder = Decoder(c.vocab_size, c.emb_dim, c.hidden, c.z_dim, c.dec_layers,
                               c.feed_z, c.tie, c.dropout)
        if c.z_dim > 0:
            self.encoder = Encoder(c.vocab_size, c.emb_dim, c.enc_hidden or c.hidden, c.enc_layers,
                                   c.bidirectional, c.dropout)
            self.posterior = make_guide(c.guide, self.encoder.out_dim, c.z_dim)

    @property
    def device(self):
        return self.decoder.out.weight.device

    def _plate(self, n, size):
        """The plate over sentences; with ``size`` the batch is a subsample of a corpus of that size."""
        if size is None:
            return pyro.plate("sentences", n)
        return pyro.plate("sentences", size, subsample=torch.arange(n))

    def model(self, batch=None, size=None, beta=1.0, word_keep=1.0, n=None, strategy=None, max_len=50):
        """p(x, z). With a batch, x is observed; without, n sentences are decoded with ``strategy``."""
        pyro.module("decoder", self.decoder)
        n = batch.size if batch is not None else n
        with self._plate(n, size):
            z = None
            if self.z_dim > 0:
                loc = torch.zeros(n, self.z_dim, device=self.device)
                with poutine.scale(scale=max(beta, BETA_FLOOR)):
                    z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            if batch is None:
                return pyro.sample("x", Sentences(self.decoder, z, strategy=strategy, max_len=max_len,
                                                  batch_size=n))
            inputs = word_dropout(batch.inputs, word_keep) if self.training else batch.inputs
            return pyro.sample("x", Sentences(self.decoder, z, inputs=inputs), obs=batch.targets)

    def guide(self, batch, size=None, beta=1.0, **kwargs):
        """q(z | x), under the same plate and the same KL scale as the model's z."""
        if self.z_dim == 0:
            return None
        pyro.module("encoder", self.encoder)
        pyro.module("posterior", self.posterior)
        with self._plate(batch.size, size):
            with poutine.scale(scale=max(beta, BETA_FLOOR)):
                return pyro.sample("z", self.q(batch))

    def q(self, batch):
        """The variational distribution for a batch: batch shape [B], event shape [Z]."""
        return self.posterior(self.encoder(batch.targets, batch.lengths))
