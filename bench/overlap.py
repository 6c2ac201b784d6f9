"""How much of a sentence its reconstruction keeps: content words of the input found in the
decoded posterior mean (beam search), over the first sentences of a split.

    python bench/overlap.py RUN [--split valid] [--limit 300] [--beam 5] [--max-tokens 15] [--no-unk]
                            [--rerank] [--bow-guide WEIGHT] [--refine STEPS]

Content words are evaluation.reconstruction's (tokens with a letter that are neither <unk>, N
nor a function word). Prints the mean fraction kept, the fraction of sentences keeping more than half, and the
quick start's two sentences with their reconstructions. ``--no-unk`` forbids <unk> in the
reconstructions; ``--rerank`` chooses among the beam's candidates by log p(x'|z) + log q(z|x')
(decoding.Beam); ``--bow-guide W`` adds W * log softmax(bow(z)) (the run's bag-of-words head) to
every step's log-probabilities, a product of the decoder and the head; ``--refine N`` decodes the
mean of q(z|x) after N steps of semi-amortized inference (its ELBO, the model fixed).
"""

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pyro_svae import load  # noqa: E402
from pyro_svae.errors import SVAEError, run_script  # noqa: E402
from pyro_svae.evaluation.reconstruction import content_kept  # noqa: E402
from pyro_svae.inference.refine import refine_summaries  # noqa: E402
from pyro_svae.models.networks import frozen  # noqa: E402


class BowGuided(torch.nn.Module):
    """The decoder with its bag-of-words head as a second expert: step -> log p_dec + weight * log p_bow."""

    def __init__(self, decoder, bow, weight):
        super().__init__()
        self.decoder, self.bow, self.weight, self.out = decoder, bow, weight, decoder.out

    def initial_state(self, z):
        return self.decoder.initial_state(z)

    def step(self, tokens, z, state):
        logits, state = self.decoder.step(tokens, z, state)
        return F.log_softmax(logits, -1) + self.weight * F.log_softmax(self.bow(z), -1), state


def posterior_means(vae, texts, refine):
    """The mean of q(z|x) of each text [N, Z], the guide's summaries first refined ``refine`` steps."""
    if not refine:
        return vae.posterior_mean(texts)
    batch = vae.batch(texts)
    with frozen(vae.svae):
        with torch.no_grad():
            h = vae.svae.encoder(batch.targets, batch.lengths)
        h = refine_summaries(vae.svae, batch, h, refine)
    with torch.no_grad():
        return vae.svae.posterior(h).mean


@contextlib.contextmanager
def bow_guided(svae, weight):
    """Within: the model decodes with BowGuided in place of its decoder (weight 0: unchanged)."""
    plain = svae.decoder
    if weight:
        svae.decoder = BowGuided(plain, svae.bow, weight)
    try:
        yield
    finally:
        svae.decoder = plain


def reconstruct(vae, texts, refine, guide, **search):
    """The decoded (refined) posterior mean of each text."""
    z = posterior_means(vae, texts, refine)
    with bow_guided(vae.svae, guide):
        return vae.decode(z, **search)


EXAMPLES = ["the company said it would n't comment on the report", "i do n't think it 's a good idea"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="A trained run directory.")
    p.add_argument("--split", default="valid", help="The run's split to reconstruct.")
    p.add_argument("--limit", type=int, default=300, help="Its first N sentences.")
    p.add_argument("--beam", type=int, default=5, help="Beam width of the reconstructions.")
    p.add_argument("--max-tokens", type=int, default=0, help="Only sentences of at most N words (0: all).")
    p.add_argument("--no-unk", action="store_true", help="Reconstructions without <unk>.")
    p.add_argument("--rerank", action="store_true", help="Rerank the beam's candidates by log p(x'|z) + log q(z|x').")
    p.add_argument("--bow-guide", type=float, default=0.0, help="Weight of the bag-of-words head in the search.")
    p.add_argument("--refine", type=int, default=0, help="Refine q(z|x) by N ELBO steps before decoding.")
    args = p.parse_args()
    vae = load(args.run, device="cpu", warn=lambda m: None)  # not a run: run_script's one line
    if args.bow_guide and vae.svae.bow is None:
        sys.exit(f"error: --bow-guide: {args.run} has no bag-of-words head (trained without --bow)")
    if args.refine:
        try:  # the model's own check: one q(z|x), and a closed-form mean to decode
            vae.svae.q(vae.batch(EXAMPLES[:1])).mean
        except (SVAEError, NotImplementedError):
            sys.exit(f"error: --refine: the {vae.svae.config.guide} guide of {args.run} has no single q(z|x) with a mean")
    search = dict(strategy="beam", beam=args.beam, unk=not args.no_unk, rerank=args.rerank)
    pyro.set_rng_seed(0)
    split = vae.split(args.split, limit=args.limit, max_words=args.max_tokens)  # words, whatever the tokenizer
    texts = [vae.tokenizer.decode(split.sentence(i)) for i in range(len(split))]
    kept = []
    for start in range(0, len(texts), 50):
        chunk = texts[start : start + 50]
        for text, rec in zip(chunk, reconstruct(vae, chunk, args.refine, args.bow_guide, **search)):
            fraction = content_kept(text, rec)
            if fraction is not None:
                kept.append(fraction)
    print(f"{args.run}: {len(kept)} sentences with content words; mean fraction kept {sum(kept) / len(kept):.3f}; "
          f"sentences keeping more than half {sum(k > 0.5 for k in kept) / len(kept):.3f}")
    for sentence, rec in zip(EXAMPLES, reconstruct(vae, EXAMPLES, args.refine, args.bow_guide, **search)):
        print(f"  {sentence}  ->  {rec}")


if __name__ == "__main__":
    run_script(main)
