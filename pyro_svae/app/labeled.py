"""A trained ``--prior class`` run (Kingma et al. 2014's M2): sample from a class, classify,
reconstruct, and transfer a sentence to another class.

    vae = pyro_svae.load("runs/yelp-m2")
    probs = vae.classify(["the food was great ."])        # q(y | x): [N, K]
    _, texts = vae.sample(5, label="1")                   # z ~ p(z), decoded under y = "1"
    source, texts = vae.transfer(["the food was great ."], to="0")"""

import torch

from ..errors import SVAEError
from ..models.labeled import label_names
from .trained import CHUNK, TrainedVAE, as_strategy


class TrainedLabeledVAE(TrainedVAE):
    """TrainedVAE for a LabeledVAE. The label names are the corpus's (config.json), or 0..K-1."""

    @property
    def labels(self):
        return label_names(self.config.get("labels"), self.svae.classes)

    def label_id(self, label):
        """A label's class id, by name (or by id for a model trained without names)."""
        names = self.labels
        if str(label) in names:
            return names.index(str(label))
        raise SVAEError(f"unknown label {label!r}; this run's labels: {', '.join(names)}")

    def _need_latent(self):
        raise SVAEError("this is a --prior class run: it supports sample, classify, reconstruct, posterior, "
                        "homotopy, transfer and evaluate")

    def evaluate(self, split="test", samples=100, batch_size=32, chunk=50, seed=0, progress=True, **ignored):
        """log p(x) with the label summed out (IW, ``samples`` draws per class), the ELBO, and the
        accuracy of q(y | x) overall and per class on the split's labeled sentences, with each
        class's NLL given its label (evaluation/labeled.py)."""
        from ..evaluation.labeled import evaluate_labeled

        return evaluate_labeled(self.svae, self.split(split), samples, batch_size, chunk, seed, progress, self.labels)

    @torch.inference_mode()
    def _decode(self, y, z=None, strategy="greedy", max_len=None, **search):
        """Sentences of classes y [N] from codes z [N, Z] (None: z ~ p(z)). -> (z, texts)."""
        z, tokens = self.svae.decode(y, z, strategy=as_strategy(strategy, search), max_len=max_len or self.max_len)
        return z, [self.tokenizer.decode(row.tolist()) for row in tokens]

    def sample(self, n, component=None, label=None, **decoding):
        """n draws: y (the given label, else y ~ p(y)), z ~ p(z), x decoded. -> (z [n, Z], texts)."""
        return self.sample_labeled(n, label, **decoding)[1:]

    def sample_labeled(self, n, label=None, **decoding):
        """As sample, with the classes: -> (label names [n], z [n, Z], texts)."""
        if label is not None:
            y = torch.full((n,), self.label_id(label), dtype=torch.long, device=self.svae.device)
        else:
            y = torch.randint(self.svae.classes, (n,), device=self.svae.device)
        z, texts = self._decode(y, **decoding)
        return [self.labels[k] for k in y.tolist()], z, texts

    def iter_sample_labeled(self, n, label=None, chunk=None, **decoding):
        chunk = chunk or CHUNK
        for start in range(0, n, chunk):
            yield self.sample_labeled(min(chunk, n - start), label, **decoding)

    def iter_sample(self, n, component=None, chunk=None, label=None, **decoding):
        for _, z, texts in self.iter_sample_labeled(n, label, chunk, **decoding):
            yield z, texts

    @torch.inference_mode()
    def classify(self, sentences):
        """q(y | x) per sentence: probabilities [N, K] (columns in the order of ``labels``)."""
        return self.svae.classify(self.batch(sentences))

    def iter_classify(self, sentences, chunk=None):
        """classify() in pieces of at most ``chunk`` sentences: yields probabilities [m, K]."""
        chunk = chunk or CHUNK
        for start in range(0, len(sentences), chunk):
            yield self.classify(sentences[start : start + chunk])

    def _summaries(self, sentences, given=None):
        """The encoder's summaries h [N, H] and each sentence's class: ``given``, else the most
        probable under q(y | x). -> (h, class ids [N])."""
        batch = self.batch(sentences)
        h = self.svae.encoder(batch.targets, batch.lengths)
        if given is not None:
            return h, torch.full((batch.size,), self.label_id(given), dtype=torch.long, device=self.svae.device)
        return h, self.svae.q_y(h).probs.argmax(-1)

    @torch.inference_mode()
    def encode_labeled(self, sentences, given=None):
        """Each sentence's class (``given``, else the most probable under q(y | x)) and E[z | x, y].
        -> (class ids [N], z [N, Z])."""
        h, y = self._summaries(sentences, given)
        return y, self.svae.z_mean(h, y)

    def reconstruct(self, sentences, **decoding):
        """Decode E[z | x, y] under each sentence's most probable class y. -> (z, texts)."""
        y, z = self.encode_labeled(sentences)
        return self._decode(y, z, **decoding)

    def transfer(self, sentences, to, given=None, **decoding):
        """Sentiment (or any class) transfer: z = E[z | x, y] under the sentence's own class (given,
        else predicted), decoded under class ``to``. -> (source label names, texts)."""
        target = self.label_id(to)
        y, z = self.encode_labeled(sentences, given)
        _, texts = self._decode(torch.full_like(y, target), z, **decoding)
        return [self.labels[k] for k in y.tolist()], texts

    def iter_transfer(self, sentences, to, given=None, chunk=None, **decoding):
        chunk = chunk or CHUNK
        for start in range(0, len(sentences), chunk):
            yield self.transfer(sentences[start : start + chunk], to, given, **decoding)

    @torch.inference_mode()
    def posterior(self, sentences, n=5, **decoding):
        """n draws z ~ q(z | x, y) per sentence under its most probable class y, each decoded under y.
        -> (z [N*n, Z], texts), grouped by sentence."""
        h, y = self._summaries(sentences)
        z = self.svae.q_z(h, y).sample((n,)).transpose(0, 1).reshape(-1, self.svae.z_dim)  # sentence-major
        return self._decode(y.repeat_interleave(n), z, **decoding)

    def iter_posterior(self, sentences, n=5, chunk=None, **decoding):
        """posterior() a sentence at a time, in pieces of at most ``chunk`` draws: yields
        (sentence index [m], z, texts)."""
        chunk = chunk or CHUNK
        for i, sentence in enumerate(sentences):
            for start in range(0, n, chunk):
                z, texts = self.posterior([sentence], min(chunk, n - start), **decoding)
                yield [i] * len(texts), z, texts

    def iter_homotopy(self, first=None, second=None, steps=5, from_prior=False, chunk=None, strategy="greedy",
                      max_len=None, **search):
        """Points on the line between two sentences' codes [E[z | x, y], onehot(y)] under their most
        probable classes (or two prior draws), decoded: yields (t [m], code [m, Z + K], texts). Between
        two classes the label's one-hot moves too, so the sentence crosses from one class to the other."""
        chunk = chunk or CHUNK
        if steps < 2:
            raise SVAEError("--steps must be at least 2 (the two endpoints)")
        with torch.inference_mode():
            if from_prior:
                y = torch.randint(self.svae.classes, (2,), device=self.svae.device)
                z = torch.randn(2, self.svae.z_dim, device=self.svae.device)
            else:
                y, z = self.encode_labeled([first, second])
            ends = self.svae.code(z, y)
            strategy = as_strategy(strategy, search)
            for start in range(0, steps, chunk):
                t = torch.arange(start, min(steps, start + chunk), device=ends.device).unsqueeze(1) / (steps - 1)
                code = (1 - t) * ends[0] + t * ends[1]
                tokens = self.svae.decode_code(code, strategy, max_len or self.max_len)
                yield t.squeeze(1).tolist(), code, [self.tokenizer.decode(row.tolist()) for row in tokens]

    def homotopy(self, first=None, second=None, steps=5, from_prior=False, **decoding):
        pieces = list(self.iter_homotopy(first, second, steps, from_prior, **decoding))
        return torch.cat([c for _, c, _ in pieces]), [text for _, _, texts in pieces for text in texts]

    @torch.inference_mode()
    def encode(self, sentences):
        """q(z | x, y) under each sentence's most probable class y: batch shape [N], event [Z]."""
        return self.svae.q_z(*self._summaries(sentences))

    @torch.inference_mode()
    def kl(self, sentences):
        """KL(q(z | x, y) || p(z)) under each sentence's most probable class, nats: [N] (analytic for
        diag, else from 256 draws)."""
        import pyro.distributions as dist
        from pyro.distributions.kl import kl_divergence

        q = self.encode(sentences)
        prior = dist.Normal(torch.zeros(len(sentences), self.svae.z_dim, device=self.svae.device), 1.0).to_event(1)
        try:
            return kl_divergence(q, prior)
        except NotImplementedError:
            z = q.sample((256,))
            return (q.log_prob(z) - prior.log_prob(z)).mean(0)

    @torch.inference_mode()
    def latent_map(self, split="valid", n=1000, batch_size=64, method="auto"):
        """The map of TrainedVAE.latent_map over E[z | x, y] under the predicted classes, with
        ``labels``: each point's predicted label name."""
        from ..evaluation.latent_map import latent_map

        m = latent_map(self.svae, self.tokenizer, self.split(split, limit=n), split, batch_size, method)
        m.labels = [self.labels[k] for probs in self.iter_classify(m.texts) for k in probs.argmax(-1).tolist()]
        return m
