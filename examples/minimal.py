"""The sentence VAE of Bowman et al. 2015 trained with plain Pyro SVI, using pyro_svae's modules for
the data, the networks and the model, but none of its training machinery (no run directory,
checkpoints or CLI). For people who want the model without the tool.

    python examples/minimal.py --data ../shared/data/ptb --steps 300
"""

import argparse
import os
import sys

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pyro_svae import FreeBitsELBO, ModelConfig, SentenceVAE  # noqa: E402
from pyro_svae.data.corpus import batch_order, encode_sentences, gather, read_sentences, split_files  # noqa: E402
from pyro_svae.data.tokenizers import WordTokenizer  # noqa: E402
from pyro_svae.models.decoding import Greedy  # noqa: E402


def load_corpus(path, vocab_size, max_len):
    """Word tokenizer and encoded train/valid splits of a folder with train/valid files."""
    files = split_files(path)
    train_text, _ = read_sentences(files["train"])
    tokenizer = WordTokenizer.build(train_text, max_size=vocab_size)
    train, _ = encode_sentences(train_text, tokenizer, max_len=max_len)
    valid, _ = encode_sentences(read_sentences(files["valid"])[0], tokenizer)
    return tokenizer, train, valid


def kl_weight(step, warmup):
    """KL annealing: beta rises linearly from ~0 to 1 (poutine.scale rejects 0)."""
    return max(1e-4, min(1.0, step / warmup))


def reconstruct(svae, tokenizer, split, n):
    """Decode the posterior mean of the first n sentences greedily: the model conditioned on z."""
    batch = gather(split, list(range(n)))
    with torch.no_grad():
        z = svae.posterior_mean(batch)
        trace = poutine.trace(poutine.condition(svae.model, data={"z": z})).get_trace(n=len(z), strategy=Greedy())
    return [tokenizer.decode(row.tolist()) for row in trace.nodes["x"]["value"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/ptb")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=10000)
    parser.add_argument("--free-bits", type=float, default=0.5, help="KL floor per dimension, nats (0: Trace_ELBO)")
    parser.add_argument("--warmup", type=int, default=2000, help="steps of KL annealing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    tokenizer, train, valid = load_corpus(args.data, args.vocab_size, max_len=60)
    svae = SentenceVAE(ModelConfig(vocab_size=len(tokenizer), z_dim=32))
    loss = FreeBitsELBO(args.free_bits) if args.free_bits > 0 else Trace_ELBO()
    svi = SVI(svae.model, svae.guide, ClippedAdam({"lr": 2e-3, "clip_norm": 5.0}), loss)

    step, epoch = 0, 0
    while step < args.steps:
        for positions in batch_order(train, args.batch_size, seed=args.seed, epoch=epoch):
            beta = kl_weight(step, args.warmup)
            # the plate scales the minibatch ELBO to the corpus; beta scales the latent's terms
            value = svi.step(gather(train, positions), size=len(train), beta=beta, word_keep=0.75)
            step += 1
            if step % 50 == 0:
                print(f"step {step}: loss per sentence {value / len(train):.2f} (beta {beta:.3f})")
            if step == args.steps:
                break
        epoch += 1

    svae.eval()
    with torch.no_grad():
        first = gather(valid, list(range(min(256, len(valid)))))
        elbo = -Trace_ELBO().loss(svae.model, svae.guide, first, size=first.size) / first.size
    print(f"validation ELBO per sentence, first {first.size} sentences: {elbo:.2f}")
    for i, text in enumerate(reconstruct(svae, tokenizer, valid, 3)):
        print(f"{tokenizer.decode(valid.sentence(i))}\t->\t{text}")


if __name__ == "__main__":
    main()
