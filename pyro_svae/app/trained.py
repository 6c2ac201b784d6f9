"""A trained run, ready to explore: encode, decode, sample, reconstruct, posterior, homotopy.

    vae = pyro_svae.load("runs/ptb")
    z, texts = vae.sample(5, strategy="beam")

Decoding is the Pyro model conditioned on z (``poutine.condition``), with the search chosen by
``strategy``: greedy, sample (temperature, top_k) or beam (beam, length_penalty). Random draws
come from Pyro's global RNG: seed it with ``pyro.set_rng_seed``."""

import sys

import torch

from ..data.corpus import EncodedSplit, encode_sentences, make_batch, read_sentences
from ..models.decoding import Beam, Greedy, Sampling, make_strategy
from ..devices import resolve_device
from ..errors import SVAEError
from ..evaluation.latent_map import latent_map
from ..evaluation.metrics import evaluate
from ..evaluation.reconstruction import first_sentences
from ..models.documents import ChainVAE
from ..models.labeled import LabeledVAE
from ..training.rundir import load_corpus, load_run
from .measures import DocumentMeasures


CHUNK = 256  # sentences decoded at once by the iter_* methods: memory stays flat in n and steps


def as_strategy(strategy, search):
    """A search strategy object, or one built from its name and options (make_strategy)."""
    return strategy if isinstance(strategy, (Greedy, Sampling, Beam)) else make_strategy(strategy, **search)


class TrainedVAE(DocumentMeasures):
    def __init__(self, svae, tokenizer, config, warn=None, run_dir=None):
        self.svae, self.tokenizer, self.config, self.run_dir = svae, tokenizer, config, run_dir
        self.max_len = config["train"]["max_len"] + 1  # tokens decoded, </s> included
        self.longest = config["train"]["max_len"]  # a sentence given to the run is truncated to this
        self.warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))

    @property
    def z_dim(self):
        return self.svae.z_dim

    def _need_latent(self):
        if self.z_dim == 0:
            raise SVAEError("this run is a language model: it has no latent space")

    def batch(self, sentences):
        """Tokenize sentences into a Batch; unknown words become <unk> with a warning."""
        return make_batch(self.token_ids(sentences)).to(self.svae.device)

    def token_ids(self, sentences):
        """Tokenize sentences into lists of ids; unknown words become <unk> with a warning, a
        sentence over the run's --max-len is truncated with one."""
        ids = []
        for i, s in enumerate(sentences, 1):
            if not s.strip():
                raise SVAEError(f"sentence {i} is empty")
            unknown = self.tokenizer.unknown_words(s)
            t = self.tokenizer.encode(s)
            if unknown and len(unknown) == len(s.split()):
                raise SVAEError(f"sentence {i} has only words outside the vocabulary: {s!r}")
            if unknown:
                self.warn(f"sentence {i}: not in the vocabulary, read as <unk>: {' '.join(unknown)}")
            if len(t) > self.longest:
                self.warn(f"sentence {i}: {len(t)} tokens, truncated to the run's --max-len {self.longest}")
                t = t[: self.longest]
            ids.append(t)
        return ids

    @torch.inference_mode()
    def encode(self, sentences):
        """-> q(z | x): a distribution with batch shape [N] and event shape [Z]."""
        self._need_latent()
        return self.svae.q(self.batch(sentences))

    @torch.inference_mode()
    def decode(self, z, strategy="greedy", max_len=None, **search):
        """z [N, Z] -> N sentences (the model conditioned on z, x decoded by the strategy)."""
        tokens = self.decode_tokens(z, strategy, max_len, **search)
        return [self.tokenizer.decode(row.tolist()) for row in tokens]

    @torch.inference_mode()
    def decode_tokens(self, z, strategy="greedy", max_len=None, n=None, **search):
        """z [N, Z] (or None with n for prior draws) -> tokens [N, L] (w1..wn </s> <pad>..)."""
        return self._run_model(z, strategy, max_len, n, **search)[1]

    @torch.inference_mode()
    def _run_model(self, z, strategy="greedy", max_len=None, n=None, **search):
        """The model, conditioned on z or drawing it from the prior -> (z or None, tokens)."""
        return self.svae.decode(z, n, as_strategy(strategy, search), max_len or self.max_len)

    def split(self, name="test", input_file=None, limit=0, max_words=0):
        """An evaluation split: one of the run's (train/valid/test), or a text file encoded with
        the run's tokenizer; ``limit`` keeps the first sentences only, ``max_words`` only those of
        at most that many words (of the decoded text, whatever the tokenizer). An encoded split
        (EncodedSplit, store.MappedSplit) passes through."""
        if not isinstance(name, str):
            split = name
        elif input_file:
            sentences, _ = read_sentences(input_file)
            split, stats = encode_sentences(sentences, self.tokenizer, self.longest, too_long="truncate")
            if stats.too_long:
                self.warn(f"{input_file}: {stats.too_long} sentences over the run's --max-len {self.longest} "
                          "tokens, truncated to it")
        else:
            from .export import is_model_folder

            if is_model_folder(self.run_dir):
                raise SVAEError(f"{self.run_dir}: a model folder holds no corpus; give sentences (--input FILE)")
            splits = load_corpus(self.run_dir)
            if name not in splits or len(splits[name]) == 0:
                raise SVAEError(f"{self.run_dir}: the run has no {name} split")
            split = splits[name]
        if len(split) == 0:
            raise SVAEError(f"{input_file or 'the split'}: no sentence to evaluate")
        if limit or max_words:
            fits = (lambda ids: len(self.tokenizer.decode(ids).split()) <= max_words) if max_words else None
            picked = first_sentences(split, limit or len(split), fits)
            if not picked:  # only a length filter can leave none: the split is not empty
                raise SVAEError(f"{input_file or 'the split'}: no sentence of at most {max_words} words")
            split = EncodedSplit.from_lists(picked)
        return split

    def evaluate(self, split="test", samples=500, **options):
        """IW-NLL, ELBO, KL, perplexities, mutual information and active units (evaluation.evaluate)."""
        return evaluate(self.svae, self.split(split), samples, **options)

    def reconstruction(self, split="test", limit=0, decode="greedy", beam=5, batch_size=64, max_words=0, rerank=False):
        """How much of each sentence (the first ``limit``, of at most ``max_words`` words where given)
        its decoded posterior mean keeps (evaluation/reconstruction.py; ``rerank``: decoding.Beam's):
        -> {"totals": {"bleu", "token_accuracy", "content_kept", "exact", "sentences", "by_length"},
        "sentences": [{"reconstruction", "bleu", "token_accuracy", "content_kept", "exact"}]}."""
        from ..evaluation.reconstruction import reconstruct_ids, scores

        self._need_latent()
        data = self.split(split, limit=limit, max_words=max_words)
        ids = [data.sentence(i) for i in range(len(data))]
        strategy = make_strategy(decode, beam=beam, rerank=rerank)
        decoded = reconstruct_ids(self.svae, ids, strategy, batch_size, self.max_len)
        totals, rows = scores([self.tokenizer.decode(s) for s in ids], [self.tokenizer.decode(s) for s in decoded])
        return {"totals": {**totals, "decode": decode + (", reranked" if rerank else "")}, "sentences": rows}

    def refine(self, split="test", steps=20, **options):
        """The amortization gap: mean ELBO before and after ``steps`` per-sentence SVI steps."""
        from ..inference.refine import refine

        self._need_latent()
        return refine(self.svae, self.split(split), steps, **options)

    def grad_variance(self, split="valid", estimators=("reparam", "reinforce", "reinforce+baseline"),
                      samples=200, batch_size=16, progress=True):
        """Variance of the guide-parameter gradient under each estimator, on the first
        ``batch_size`` sentences of ``split``."""
        from ..inference.gradients import guide_gradient_variance

        self._need_latent()
        data = self.split(split)
        batch = make_batch([data.sentence(i) for i in range(min(batch_size, len(data)))]).to(self.svae.device)
        return guide_gradient_variance(self.svae, batch, estimators, samples, progress)

    def component_grad_variance(self, split="valid", estimators=("enum", "reinforce", "reinforce+baseline", "concrete"),
                                samples=200, batch_size=16, temperature=0.5, progress=True):
        """Variance (and bias against the exact sum) of the ELBO's gradient w.r.t. q(c|x) under each
        discrete estimator, on the first ``batch_size`` sentences of ``split`` (a mixture run
        trained with concrete or reinforce)."""
        from ..inference.gradients import component_gradient_variance

        self._mixture()
        data = self.split(split)
        batch = make_batch([data.sentence(i) for i in range(min(batch_size, len(data)))]).to(self.svae.device)
        return component_gradient_variance(self.svae, batch, estimators, samples, temperature, progress)

    def impute(self, split="test", baseline=None, fraction=0.2, beam=15, iterations=3, limit=0,
               batch_size=64, seed=0, progress=True):
        """Bowman's imputation experiment on ``split``: complete the last ``fraction`` of each
        sentence with this VAE (ICM) and/or the language model ``baseline`` (a TrainedVAE with
        no latent), then score both with adversarial classifiers.
        -> (rows of {"prefix", "truth", "vae", "lm"} as text, {"vae"|"lm": classifier report})."""
        from ..data.tokenizers import vocab_hash
        from ..evaluation.imputation import experiment

        if baseline is not None and vocab_hash(baseline.tokenizer) != vocab_hash(self.tokenizer):
            raise SVAEError("the baseline was trained with another vocabulary than this run")
        data = self.split(split, limit=limit)
        vae = self.svae if self.z_dim > 0 else None
        lm = baseline.svae if baseline is not None else (self.svae if self.z_dim == 0 else None)
        return experiment([data.sentence(i) for i in range(len(data))], vae, lm, self.tokenizer, fraction, beam,
                          iterations, batch_size, seed, progress)

    def sample(self, n, component=None, label=None, **decoding):
        """n draws from the model: z ~ p(z), then x decoded from z. -> (z [n, Z] or None, texts).
        component k (a mixture prior): z ~ p(z | c = k) instead. label: a --prior class run's."""
        if label is not None:
            raise SVAEError("--label: this run has no classes (train with --prior class on a labeled corpus)")
        if component is not None:
            mixture = self._mixture()
            if not 0 <= component < mixture.k:
                raise SVAEError(f"--component {component}: the mixture has components 0 to {mixture.k - 1}")
            with torch.inference_mode():
                z = mixture.sample_component(component, n)
            return z, self.decode(z, **decoding)
        z, tokens = self._run_model(None, n=n, **decoding)
        return z, [self.tokenizer.decode(row.tolist()) for row in tokens]

    def iter_sample(self, n, component=None, chunk=None, label=None, **decoding):
        """sample() in pieces of at most ``chunk`` sentences: yields (z, texts)."""
        chunk = chunk or CHUNK
        for start in range(0, n, chunk):
            yield self.sample(min(chunk, n - start), component, label, **decoding)

    def _mixture(self):
        from ..models.discrete import MixturePrior

        if not isinstance(getattr(self.svae, "prior", None), MixturePrior):
            raise SVAEError("this run has no mixture prior (train with --prior mixture:K)")
        return self.svae.prior

    @torch.inference_mode()
    def component_posterior(self, sentences):
        """The posterior over the mixture's component for each sentence: [N, K]
        (q(c|x), or E_q(z|x) p(c|z) for a run trained by enumeration)."""
        self._mixture()
        return self.svae.component_posterior(self.batch(sentences))

    @torch.inference_mode()
    def clusters(self, split="test", top=10, limit=0, batch_size=64):
        """The mixture's components as clusters of a split's sentences: each sentence goes to its
        most probable component. -> [{"component", "weight" (pi_k), "size", "share" (mean
        posterior), "sentences" (the ``top`` most probable members), "words" (the ``top`` most
        characteristic words: count in the cluster x log of how much likelier there than in the
        split)}], largest first."""
        from ..evaluation.clusters import clusters

        return clusters(self.svae, self._mixture(), self.tokenizer, self.split(split, limit=limit), top, batch_size)

    @torch.inference_mode()
    def posterior_mean(self, sentences):
        """E_q[z] for each sentence: [N, Z]."""
        self._need_latent()
        return self.svae.posterior_mean(self.batch(sentences))

    def reconstruct(self, sentences, **decoding):
        """Decode the posterior mean of each sentence. -> (z [N, Z], texts)."""
        z = self.posterior_mean(sentences)
        return z, self.decode(z, **decoding)

    def iter_reconstruct(self, sentences, chunk=None, **decoding):
        """reconstruct() in pieces of at most ``chunk`` sentences: yields (z, texts)."""
        chunk = chunk or CHUNK
        for start in range(0, len(sentences), chunk):
            yield self.reconstruct(sentences[start : start + chunk], **decoding)

    def posterior(self, sentences, n=5, **decoding):
        """n draws z ~ q(z|x) per sentence, each decoded. -> (z [N*n, Z], texts), grouped by sentence."""
        self._need_latent()
        return self._posterior_draws(self.batch(sentences), n, **decoding)

    @torch.inference_mode()
    def _posterior_draws(self, batch, n, **decoding):
        z = self.svae.guide_draws(batch, n)[0].reshape(-1, self.z_dim)
        return z, self.decode(z, **decoding)

    def iter_posterior(self, sentences, n=5, chunk=None, **decoding):
        """posterior() in pieces of at most ``chunk`` draws: yields (sentence index [m], z, texts)."""
        chunk = chunk or CHUNK
        if n <= chunk:
            group = chunk // n
            for start in range(0, len(sentences), group):
                part = sentences[start : start + group]
                z, texts = self.posterior(part, n, **decoding)
                yield [start + i // n for i in range(len(texts))], z, texts
            return
        self._need_latent()
        for i, sentence in enumerate(sentences):
            batch = self.batch([sentence])  # read (and warned about) once
            for start in range(0, n, chunk):
                z, texts = self._posterior_draws(batch, min(chunk, n - start), **decoding)
                yield [i] * len(texts), z, texts

    @torch.inference_mode()
    def kl(self, sentences):
        """KL(q(z|x) || p(z)) of each sentence, nats: [N]."""
        from ..evaluation.metrics import latent_kl

        self._need_latent()
        return latent_kl(self.svae, self.batch(sentences))

    @torch.inference_mode()
    def latent_map(self, split="valid", n=1000, batch_size=64, method="auto"):
        """The posterior means of the first ``n`` sentences of a split, projected to 2-D by ``method``:
        pca, umap (needs umap-learn), or auto (umap where installed, else pca).
        -> LatentMap (points [n, 2], texts, lengths; .project(z) places other codes)."""
        self._need_latent()
        return latent_map(self.svae, self.tokenizer, self.split(split, limit=n), split, batch_size, method)

    def homotopy(self, first=None, second=None, steps=5, from_prior=False, **decoding):
        """Decode ``steps`` evenly spaced points on the line between two codes, endpoints
        included: the posterior means of two sentences, or two prior draws. -> (z [steps, Z], texts)."""
        pieces = list(self.iter_homotopy(first, second, steps, from_prior, **decoding))
        return torch.cat([z for _, z, _ in pieces]), [text for _, _, texts in pieces for text in texts]

    def iter_homotopy(self, first=None, second=None, steps=5, from_prior=False, chunk=None, **decoding):
        """homotopy() in pieces of at most ``chunk`` points: yields (t [m], z [m, Z], texts)."""
        chunk = chunk or CHUNK
        self._need_latent()
        if steps < 2:
            raise SVAEError("--steps must be at least 2 (the two endpoints)")
        if from_prior:
            with torch.inference_mode():
                ends = self.svae.prior.sample(2, self.svae.device)
        else:
            ends = self.posterior_mean([first, second])
        for start in range(0, steps, chunk):
            t = torch.arange(start, min(steps, start + chunk), device=ends.device).unsqueeze(1) / (steps - 1)
            z = (1 - t) * ends[0] + t * ends[1]
            yield t.squeeze(1).tolist(), z, self.decode(z, **decoding)


def load(run_dir, device="auto", which="best", warn=None):
    """Load a trained run (its best checkpoint by default), a model folder written by ``export``,
    or a hub id of one ("user/name", with huggingface_hub installed), for exploration."""
    from .export import is_model_folder, load_folder, resolve

    run_dir = resolve(run_dir)
    if is_model_folder(run_dir):
        svae, tokenizer, config = load_folder(run_dir, resolve_device(device))
    else:
        svae, tokenizer, config = load_run(run_dir, resolve_device(device), which)
    if isinstance(svae, LabeledVAE):
        from .labeled import TrainedLabeledVAE

        return TrainedLabeledVAE(svae, tokenizer, config, warn, run_dir)
    if isinstance(svae, ChainVAE):
        from .documents import TrainedChainVAE

        return TrainedChainVAE(svae, tokenizer, config, warn, run_dir)
    return TrainedVAE(svae, tokenizer, config, warn, run_dir)
