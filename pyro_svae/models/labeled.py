"""Labels as a cause of the sentence: Kingma et al. 2014's M2 for sentences (``--prior class``).

    model:  y ~ Cat(1/K),  z ~ N(0, I) (scaled by beta),  x ~ p(x | z, y)
            the decoder reads [z, onehot(y)] (its initial state and, with feed_z, every step)
            with bow > 0, training adds bow * sum_t log softmax(W [z, onehot(y)])[x_t]: a
            bag-of-words prediction of x from its code, by which each class has its own words
    guide:  y ~ q(y | x)     a classifier on the encoder's summary h
            z ~ q(z | x, y)  a single-site head (--guide: diag, lowrank, fullrank, iaf, delta) on [h, onehot(y)]

A batch holds labeled and unlabeled sentences; each kind has its own plate over its part of the
corpus (``sizes``), so the ELBO is scaled to the corpus. Where y is observed the model scores it
and adds Kingma's classification term, alpha * log q(y | x), as a ``pyro.factor``; where it is
not, the guide's y is enumerated in parallel (``TraceEnum_ELBO`` sums it exactly):

    ELBO(x) = sum_y q(y|x) [ELBO(x | y) + log p(y) - log q(y|x)].

Without any label it is an unsupervised model whose K clusters are causes of x."""

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine

from ..data.corpus import decoded_ids, make_batch
from ..errors import SVAEError
from .guides import SingleSite, make_guide
from .decoding import bind_rerank
from .likelihood import Sentences
from .networks import Decoder, Encoder, word_dropout
from .registration import module
from .vae import BETA_FLOOR, bag_of_words, corpus_plate

PARTS = ("labeled", "unlabeled")


def is_class_prior(prior):
    """Whether ``--prior`` names this model (class or class:K)."""
    return prior.partition(":")[0] == "class"


def label_names(names, classes):
    """The name of each of ``classes`` classes: the corpus's label names, else the class ids."""
    names = names or []
    return [names[k] if k < len(names) else str(k) for k in range(classes)]


def parse_classes(prior, names=None):
    """``class`` (as many classes as the corpus names labels) or ``class:K`` -> K."""
    if not is_class_prior(prior):
        return 0
    arg = prior.partition(":")[2]
    if arg:
        if not arg.isdigit() or int(arg) < 2:
            raise SVAEError(f"--prior {prior}: K must be an integer of at least 2 (class:K)")
        k = int(arg)
        if names and len(names) > k:
            raise SVAEError(f"--prior {prior}: the corpus names {len(names)} labels")
        return k
    if not names:
        raise SVAEError("--prior class: the corpus has no labels (--labels tab); give the number of classes, class:K")
    return len(names)


class LabeledVAE(nn.Module):
    """M2 on sentences: ``model`` and ``guide`` take a Batch whose ``labels`` are class ids (-1:
    unknown); ``sizes`` = {"labeled": N_l, "unlabeled": N_u} scales each part to the corpus."""

    prior_kind = "class"

    def __init__(self, config, classes, alpha=1.0):
        super().__init__()
        c = self.config = config
        self.classes, self.alpha, self.z_dim = classes, alpha, c.z_dim
        self.decoder = Decoder(c.vocab_size, c.emb_dim, c.hidden, c.z_dim + classes, c.dec_layers, c.feed_z, c.tie,
                               c.dropout, c.skip, inputless=c.word_keep == 0)
        self.encoder = Encoder(c.vocab_size, c.emb_dim, c.enc_hidden or c.hidden, c.enc_layers, c.bidirectional,
                               c.dropout, c.pool)
        self.classifier = nn.Sequential(nn.Linear(self.encoder.out_dim, self.encoder.out_dim), nn.Tanh(),
                                        nn.Linear(self.encoder.out_dim, classes))
        self.posterior = make_guide(c.guide, self.encoder.out_dim + classes, c.z_dim)
        self.bow = nn.Linear(c.z_dim + classes, c.vocab_size) if c.bow > 0 else None
        if not isinstance(self.posterior, SingleSite):
            raise SVAEError(f"--prior class: q(z | x, y) is a single-site guide (diag, lowrank, fullrank, iaf, delta), "
                            f"not {c.guide!r}")

    @property
    def device(self):
        return self.decoder.out.weight.device

    def code(self, z, y):
        """The decoder's input: [z, onehot(y)], broadcast over y's enumeration dims: [..., B, Z + K]."""
        onehot = F.one_hot(y, self.classes).to(z.dtype)
        shape = torch.broadcast_shapes(z.shape[:-1], onehot.shape[:-1])
        return torch.cat([z.expand(*shape, -1), onehot.expand(*shape, -1)], dim=-1)

    def q_y(self, h):
        """q(y | x) for encoder summaries h [B, H]: a Categorical with batch shape [B]."""
        return dist.Categorical(logits=self.classifier(h))

    def q_z(self, h, y):
        """q(z | x, y) for h [B, H] and y [..., B] (ids; enumerated dims on the left): batch [..., B]."""
        onehot = F.one_hot(y, self.classes).to(h.dtype)
        shape = torch.broadcast_shapes(h.shape[:-1], onehot.shape[:-1])
        return self.posterior(torch.cat([h.expand(*shape, -1), onehot.expand(*shape, -1)], dim=-1))

    def parts(self, batch):
        """{"labeled": rows, "unlabeled": rows} of a batch (host int64 tensors), the empty ones left out."""
        labels = batch.labels if batch.labels is not None else torch.full((batch.size,), -1)
        rows = {"labeled": (labels >= 0).nonzero().flatten(), "unlabeled": (labels < 0).nonzero().flatten()}
        return {name: r for name, r in rows.items() if len(r)}

    def model(self, batch=None, sizes=None, beta=1.0, word_keep=1.0, y=None, n=None, strategy=None, max_len=50,
              info=0.0, **kwargs):
        """p(x, y, z). With a batch, x is observed (and y where labeled); without, n sentences of
        class ``y`` (ids [n], or drawn from p(y)) are decoded with ``strategy``."""
        module("decoder", self.decoder)
        module("classifier", self.classifier)
        module("encoder", self.encoder)
        prior = torch.full((self.classes,), 1.0 / self.classes, device=self.device)
        if batch is None:
            with pyro.plate("sentences", n):
                y = pyro.sample("y", dist.Categorical(prior), obs=y)
                z = pyro.sample("z", dist.Normal(torch.zeros(n, self.z_dim, device=self.device), 1.0).to_event(1))
                return pyro.sample("x", Sentences(self.decoder, self.code(z, y), strategy=strategy, max_len=max_len,
                                                  batch_size=n))
        for name, rows in self.parts(batch).items():
            part = batch.select(rows)
            with corpus_plate(name, part.size, (sizes or {}).get(name)):
                labels = part.labels.to(self.device) if name == "labeled" else None
                y = pyro.sample(f"y_{name}", dist.Categorical(prior), obs=labels)
                with poutine.scale(scale=max(beta, BETA_FLOOR)):
                    z = pyro.sample(f"z_{name}",
                                    dist.Normal(torch.zeros(part.size, self.z_dim, device=self.device), 1.0).to_event(1))
                code = self.code(z, y)
                if self.training and self.bow is not None:  # [..., B]: one value per enumerated class
                    module("bow", self.bow)
                    pyro.factor(f"bow_{name}", self.config.bow * bag_of_words(self.bow(code), part.targets))
                inputs = word_dropout(part.inputs, word_keep) if self.training else part.inputs
                pyro.sample(f"x_{name}", Sentences(self.decoder, code, inputs=inputs), obs=part.targets)
                if name == "labeled" and self.alpha > 0:  # Kingma's classification term
                    h = self.encoder(part.targets, part.lengths)
                    pyro.factor("classify", self.alpha * self.q_y(h).log_prob(labels))
                if name == "unlabeled" and info > 0:  # summed over the plate: info x corpus x I(x; y)
                    pyro.factor("class_information", info * self.information(part))

    def guide(self, batch, sizes=None, beta=1.0, **kwargs):
        """q(y | x) q(z | x, y): y enumerated where unknown, observed (not sampled) where labeled."""
        module("encoder", self.encoder)
        module("classifier", self.classifier)
        module("posterior", self.posterior)
        for name, rows in self.parts(batch).items():
            part = batch.select(rows)
            h = self.encoder(part.targets, part.lengths)
            with corpus_plate(name, part.size, (sizes or {}).get(name)):
                if name == "labeled":
                    y = part.labels.to(self.device)
                else:
                    y = pyro.sample(f"y_{name}", self.q_y(h), infer={"enumerate": "parallel"})
                with poutine.scale(scale=max(beta, BETA_FLOOR)):
                    pyro.sample(f"z_{name}", self.q_z(h, y))

    def information(self, part):
        """I(x; y) under q over a batch, per sentence: H[mean_x q(y|x)] - H[q(y|x)] [B], whose mean
        is the mutual information of x and q's y on the batch."""
        probs = self.q_y(self.encoder(part.targets, part.lengths)).probs
        return dist.Categorical(probs.mean(0)).entropy() - dist.Categorical(probs).entropy()

    # -- uses ---------------------------------------------------------------------------------
    def classify(self, batch):
        """q(y | x) per sentence: probabilities [B, K]."""
        return self.q_y(self.encoder(batch.targets, batch.lengths)).probs

    def decode(self, y, z=None, strategy=None, max_len=50):
        """Sentences of classes y [N] (ids) from z [N, Z] (or z ~ p(z)) decoded by ``strategy``.
        -> (z, tokens [N, L])."""
        n, strategy = y.shape[0], bind_rerank(strategy, self._candidate_log_q)
        model = self.model if z is None else poutine.condition(self.model, data={"z": z})
        trace = poutine.trace(model).get_trace(y=y, n=n, strategy=strategy, max_len=max_len)
        return trace.nodes["z"]["value"], trace.nodes["x"]["value"]

    def decode_code(self, code, strategy=None, max_len=50):
        """Sentences from decoder inputs ``code`` [N, Z + K] (e.g. points between two [z, onehot(y)]):
        tokens [N, L]."""
        strategy = bind_rerank(strategy, self._candidate_log_q)
        return Sentences(self.decoder, code, strategy=strategy, max_len=max_len, batch_size=code.shape[0]).sample()

    def _candidate_log_q(self):
        """(tokens [N, L] as decoded, codes [N, Z + K]) -> log q(z|x', y) [N], y the code's likeliest
        class (its own where the code is [z, onehot(y)]), for a reranking beam."""
        def log_q(tokens, code):
            batch = make_batch(decoded_ids(tokens)).to(self.device)
            z, y = code[:, : self.z_dim], code[:, self.z_dim :].argmax(-1)
            return self.q_z(self.encoder(batch.targets, batch.lengths), y).log_prob(z)
        return log_q

    def z_mean(self, h, y, samples=64):
        """E[z | x, y] [B, Z]: exact where the family has a mean, else over ``samples`` draws (iaf)."""
        q = self.q_z(h, y)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((samples,)).mean(0)

    def posterior_mean(self, batch, y=None):
        """E[z | x, y] [B, Z] under y (ids [B]; default: the most probable class under q(y | x))."""
        h = self.encoder(batch.targets, batch.lengths)
        return self.z_mean(h, self.q_y(h).probs.argmax(-1) if y is None else y)
