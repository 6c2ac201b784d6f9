"""A trained ``--prior chain`` run (documents as chains of sentence latents), and the document
measures of any run trained on a document store (the baselines: a sentence VAE, the LM of whole
documents).

    doc = pyro_svae.load("runs/stories-chain")
    z, texts = doc.sample_documents(2, sentences=5)             # two documents drawn from the chain
    z, texts = doc.continue_document(["Tom went to the store.", "He forgot his wallet."], n=2)
    accuracy, choices, _ = doc.cloze("../shared/data/stories/cloze.valid.tsv")

A document given as one string is cut into sentences after tokens ending in ``.``, ``?`` or ``!``."""

import pyro.distributions as dist
import torch

from ..data.documents import gather_documents, make_document_batch
from ..data.sources import split_sentences
from ..data.writer import MAX_DOCUMENT
from ..errors import SVAEError
from ..evaluation.documents import document_terms
from ..evaluation.latent_map import LatentMap
from .trained import CHUNK, TrainedVAE, as_strategy

MEAN_DRAWS = 64  # draws from q that estimate a document's posterior mean
SENTENCES = 5  # the length of a document drawn from the chain where none is asked (a ROCStories story's)


def as_document(document):
    """A list of sentences, or one string (or a list of one) cut into sentences."""
    if not isinstance(document, str) and len(document) == 1:
        document = document[0]
    sentences = split_sentences(document) if isinstance(document, str) else list(document)
    if not sentences:
        raise SVAEError("a document needs at least one sentence")
    if len(sentences) > MAX_DOCUMENT:
        raise SVAEError(f"a document of {len(sentences)} sentences: at most {MAX_DOCUMENT}")
    return sentences


class TrainedChainVAE(TrainedVAE):
    """A ChainVAE run. Sentence-level decoding is the sentence VAE's (``self.svae``, the chain's
    ``sentence``); documents go through the chain (``self.chain``)."""

    def __init__(self, chain, tokenizer, config, warn=None, run_dir=None):
        super().__init__(chain.sentence, tokenizer, config, warn, run_dir)
        self.chain = chain

    def _run_model(self, z, strategy="greedy", max_len=None, n=None, **search):
        """The sentence VAE's decoding; a reranking beam only where its head is q's own factor of one
        sentence (doc-meanfield): the other guides' heads are potentials or unused."""
        strategy = as_strategy(strategy, search)
        if getattr(strategy, "rerank", False) and self.chain.kind != "doc-meanfield":
            raise SVAEError(f"--rerank needs q(z_t|x_t) of one sentence: the {self.chain.kind} guide has none")
        return super()._run_model(z, strategy, max_len, n)

    def document_batch(self, document):
        return make_document_batch([self.token_ids(as_document(document))])

    def evaluate(self, split="test", samples=100, batch_size=8, limit=0, seed=0, progress=True, **ignored):
        return self.evaluate_documents(split, samples, batch_size, limit, seed, progress)

    # -- drawing documents --------------------------------------------------------------------
    @torch.inference_mode()
    def prior_draws(self, n, sentences):
        mask = torch.ones(n, sentences, dtype=torch.bool, device=self.chain.device)
        return self.chain.prior(mask).rsample()

    def sample_documents(self, n, sentences=SENTENCES, **decoding):
        """n documents of ``sentences`` sentences: z_1..T from the chain, each z_t decoded.
        -> (z [n, T, Z], texts [n * T], document-major)."""
        if sentences < 1 or sentences > MAX_DOCUMENT:
            raise SVAEError(f"--sentences {sentences}: from 1 to {MAX_DOCUMENT}")
        z = self.prior_draws(n, sentences)
        return z, self.decode(z.reshape(-1, self.z_dim), **decoding)

    def iter_sample_documents(self, n, sentences=SENTENCES, **decoding):
        """sample_documents in pieces of at most CHUNK sentences: yields (first document's index, z, texts)."""
        per = max(CHUNK // sentences, 1)
        for start in range(0, n, per):
            z, texts = self.sample_documents(min(per, n - start), sentences, **decoding)
            yield start, z, texts

    def sample(self, n, component=None, label=None, **decoding):
        """n sentences: one document of n sentences from the chain. -> (z [n, Z], texts)."""
        if component is not None or label is not None:
            raise SVAEError("--component and --label: this run's prior is a chain over documents")
        z, texts = self.sample_documents(1, n, **decoding)
        return z[0], texts

    # -- posteriors ---------------------------------------------------------------------------
    @torch.inference_mode()
    def document_draws(self, document, n):
        """n draws z_1..T ~ q(z | x_1..T) of one document: [n, T, Z]."""
        batch = self.document_batch(document).repeat(n).to(self.chain.device)
        return self.chain.q(batch).rsample()

    def posterior_mean(self, sentences):
        """E_q[z_t] for each sentence of the document ``sentences`` (over 64 draws): [T, Z]."""
        return self.batch_means(self.document_batch(sentences))

    @torch.inference_mode()
    def batch_means(self, batch):
        """E_q[z_t] of every sentence of a DocumentBatch, each in its document (64 draws): [S, Z]."""
        draws = self.chain.q(batch.repeat(MEAN_DRAWS).to(self.chain.device)).rsample()  # [D * k, T, Z]
        means = draws.view(batch.size, MEAN_DRAWS, batch.steps, -1).mean(1)
        return means.reshape(batch.size * batch.steps, -1)[batch.slots.to(means.device)]

    @torch.inference_mode()
    def encode(self, sentences):
        """The marginals of q(z_t | x_1..T) for the document ``sentences`` (64 draws): a Normal of
        batch shape [T], event shape [Z]."""
        draws = self.document_draws(sentences, MEAN_DRAWS)
        return dist.Normal(draws.mean(0), draws.std(0).clamp(min=1e-6)).to_event(1)

    @torch.inference_mode()
    def kl(self, sentences):
        """KL(q(z | x) || p(z)) of the document ``sentences``, over 64 draws: [1] nats."""
        batch = self.document_batch(sentences).repeat(MEAN_DRAWS).to(self.chain.device)
        return document_terms(self.chain, batch)[1].mean(0, keepdim=True)

    @torch.inference_mode()
    def latent_map(self, split="valid", n=1000, batch_size=16, method="auto"):
        """The posterior means of the first ``n`` sentences of a split, each in its document, in 2-D;
        ``documents`` gives each point's document (its path on the map)."""
        data = self.document_split(split)
        means, texts, lengths, documents = [], [], [], []
        for start in range(0, len(data), batch_size):
            if len(texts) >= n:
                break
            positions = list(range(start, min(start + batch_size, len(data))))
            batch = gather_documents(data, positions)
            means.append(self.batch_means(batch).cpu())
            for d, document in zip(positions, batch.documents()):
                texts += [self.tokenizer.decode(s) for s in document]
                lengths += [len(s) for s in document]
                documents += [d] * len(document)
        if len(texts) < 2:
            raise SVAEError(f"the {split} split has {len(texts)} sentence(s); a map needs at least 2")
        m = LatentMap(torch.cat(means)[:n], texts[:n], lengths[:n], method)
        m.documents = documents[:n]
        return m

    def iter_reconstruct(self, sentences, chunk=None, **decoding):
        """The given sentences as one document: each z_t's posterior mean decoded. Yields (z, texts) once."""
        yield self.reconstruct(as_document(sentences), **decoding)

    def iter_posterior(self, sentences, n=5, chunk=None, **decoding):
        """n draws of the document's z_1..T; yields (sentence index [n], z [n, Z], texts) per sentence."""
        sentences = as_document(sentences)
        z = self.document_draws(sentences, n)
        for t in range(len(sentences)):
            yield [t] * n, z[:, t], self.decode(z[:, t], **decoding)

    def posterior(self, sentences, n=5, **decoding):
        parts = list(self.iter_posterior(sentences, n, **decoding))
        return torch.cat([z for _, z, _ in parts]), [x for _, _, texts in parts for x in texts]

    # -- uses ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def continue_document(self, document, n=3, mean=False, **decoding):
        """The next n sentences of a document: z_T ~ q (filtering: the last step's posterior given
        every sentence), then z_{T+1..T+n} from the chain (``mean``: its mean path z_{t+1} = z_t M,
        from E_q[z_T]), each decoded. -> (z [n, Z], texts)."""
        if n < 1:
            raise SVAEError("-n must be at least 1")
        draws = self.document_draws(document, MEAN_DRAWS if mean else 1)
        z = draws.mean(0)[-1:] if mean else draws[0, -1:]
        M, s = self.chain.prior.matrix, self.chain.prior(torch.ones(1, 1, dtype=torch.bool, device=z.device)).scale
        steps = []
        for _ in range(n):
            z = z @ M if mean else z @ M + s * torch.randn_like(z)
            steps.append(z)
        z = torch.cat(steps)
        return z, self.decode(z, **decoding)

    def iter_homotopy(self, first=None, second=None, steps=5, from_prior=False, chunk=None, **decoding):
        """Documents on the line between two documents' posterior means z_1..T (T: the shorter's
        length), or two chain draws of SENTENCES sentences: yields (t [T], z [T, Z], texts) per point."""
        if steps < 2:
            raise SVAEError("--steps must be at least 2 (the two endpoints)")
        if from_prior:
            ends = self.prior_draws(2, SENTENCES)
        else:
            a, b = self.posterior_mean(first), self.posterior_mean(second)
            T = min(len(a), len(b))
            if len(a) != len(b):
                self.warn(f"the documents have {len(a)} and {len(b)} sentences: interpolating their first {T}")
            ends = torch.stack([a[:T], b[:T]])
        for i in range(steps):
            t = i / (steps - 1)
            z = (1 - t) * ends[0] + t * ends[1]
            yield [t] * len(z), z, self.decode(z, **decoding)
