"""pyro-svae command line: prepare, train, sample, reconstruct, posterior, homotopy, evaluate, impute, serve, ...

Every command is a thin layer over the Python API in ``pyro_svae``. Errors in the input are
reported on one line with a non-zero exit status."""

import functools
import json
import os
import sys

import click

from pyro_svae.errors import SVAEError
from pyro_svae.training import CHOICES, STORE_OPTIONS, TrainConfig, config_from

DEFAULTS = TrainConfig()

# (option, help) for every TrainConfig field, in the order --help lists them.
TRAIN_OPTIONS = [
    ("preset", "A named set of defaults that your options override: default (keeps the latent in use: "
               "free bits, dropout, early stopping) or bowman2015 (the original recipe, which collapses)."),
    ("data", "Corpus: a folder with train/valid/test (ptb.train.txt or train.txt ...) or one file split 90/5/5."),
    ("tokenizer", "word: whitespace words (pre-tokenized corpora such as PTB); spm: sentencepiece trained on "
                  "train (on a random sample of up to 2M of its lines)."),
    ("vocab_size", "Vocabulary size, specials included (word: most frequent words; spm: pieces)."),
    ("min_count", "word tokenizer: drop words seen fewer times than this."),
    ("max_len", "Maximum tokens per training sentence (</s> not counted); valid/test stay whole."),
    ("too_long", "What to do with longer training sentences: drop or truncate."),
    ("model", "vae, or lm: the same decoder with no latent (the language-model baseline)."),
    ("emb_dim", "Word embedding size."),
    ("hidden", "Decoder LSTM size."),
    ("z_dim", "Latent size."),
    ("enc_hidden", "Encoder LSTM size (0: same as --hidden)."),
    ("enc_layers", "Encoder LSTM layers."),
    ("dec_layers", "Decoder LSTM layers."),
    ("bidirectional", "Bidirectional encoder."),
    ("feed_z", "Also feed z to the decoder at every step."),
    ("tie", "Tie the output layer to the decoder's embedding."),
    ("dropout", "Dropout on embeddings and LSTM outputs."),
    ("guide", "Variational family: diag, lowrank:R, fullrank, iaf:K, delta, hier-meanfield, hier-structured."),
    ("prior", "standard: N(0, I); hier: p(z1) p(z2|z1) (with a hier-* guide); mixture:K: a learned mixture of "
              "K Gaussians whose component is discrete (see --discrete)."),
    ("latent", "gaussian, or categorical:M,K: z is M categorical variables with K classes each (uniform prior; "
               "the code has M x K dimensions and --z-dim is not used)."),
    ("discrete", "How a discrete latent is trained: enum (the mixture's component summed out exactly by "
                 "TraceEnum_ELBO), concrete (Gumbel-softmax relaxation, see --tau), reinforce (score function "
                 "with a learned baseline, TraceGraph_ELBO); auto: enum for mixture:K, concrete for categorical."),
    ("tau", "concrete: the relaxation's temperature START,END,STEPS, falling exponentially from START to END "
            "over STEPS steps."),
    ("straight_through", "concrete: one-hot draws in the forward pass, relaxed gradients."),
    ("elbo", "trace (Trace_ELBO, sampled KL) or meanfield (TraceMeanField_ELBO, analytic KL)."),
    ("kl_schedule", "KL weight per step: constant[:b], linear:start,steps, logistic:k,x0 (Bowman), cyclical:cycles,ratio."),
    ("word_keep", "Word dropout keep rate k in [0, 1]: decoder inputs become <unk> with prob. 1-k in training (0: an "
                  "inputless decoder, which reads <unk> in evaluation and decoding too)."),
    ("free_bits", "Free bits: KL floor per latent dimension in nats, batch-averaged (Kingma et al. 2016; with "
                  "a non-diag guide the total KL is floored at this x z-dim; 0: off)."),
    ("skip", "z also adds a learned linear term to the decoder's logits at every step (a skip connection "
             "past the LSTM, Dieng et al. 2019)."),
    ("bow", "Weight of a bag-of-words term in training: the sentence's words predicted from z alone (Zhao et "
            "al. 2017), so that z carries them early; 0: off. Evaluation and decoding do not use it."),
    ("pretrain_steps", "Train as an autoencoder (beta ~ 0) for N steps, then re-initialize the decoder (Li et al. 2019)."),
    ("iw_particles", "K > 1: train on the K-sample importance-weighted bound (IWAE, Burda et al. 2016), which "
                     "targets log p(x) rather than the ELBO; validation and best.pt use the same bound."),
    ("init_decoder", "Start the decoder from this run's best.pt (a --model lm run on the same data and sizes); "
                     "z's initial-state layer starts at zero, so the VAE begins as that language model."),
    ("init_from", "Start every weight from this run's best.pt (same data and architecture), with a fresh "
                  "optimizer: fine-tune a trained model, e.g. with --iw-particles."),
    ("batch_size", "Sentences per minibatch."),
    ("lr", "Adam learning rate."),
    ("lr_decay", "Multiply the learning rate by this after each validation without a better ELBO (1: off)."),
    ("clip_norm", "Clip the global gradient norm to this (0: off)."),
    ("max_epochs", "Stop after this many epochs (0: no limit)."),
    ("max_steps", "Stop after this many steps in all (0: no limit)."),
    ("max_minutes", "Stop after this many minutes of training in all (0: no limit)."),
    ("eval_every", "Validate and checkpoint every N steps."),
    ("patience", "Stop after N validations without a better ELBO (0: never)."),
    ("seed", "Random seed (batches, initialization, sampling)."),
    ("device", "auto, cpu, cuda or cuda:N."),
    ("amp", "bf16: mixed precision (autocast) for the training step: CUDA tensor cores, or AMX on recent "
            "Xeons (1.7-2x faster at 650 units); off: float32."),
]


def _train_option(name, help_text):
    default = getattr(DEFAULTS, name)
    flag = "--" + name.replace("_", "-")
    if isinstance(default, bool):
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=f"{help_text} [default: {'yes' if default else 'no'}]")
    kind = click.Choice(CHOICES[name]) if name in CHOICES else type(default)
    shown = f" [default: {default}]" if default != "" else ""
    return click.option(flag, name, type=kind, default=None, help=help_text + shown)


def train_options(f, names=None):
    """The train options named (default: all of them), as click options defaulting to None."""
    for name, help_text in reversed(TRAIN_OPTIONS):
        if names is None or name in names:
            f = _train_option(name, help_text)(f)
    return f


def decoding_options(f):
    options = [
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option("--decode", "strategy", type=click.Choice(["greedy", "sample", "beam"]), default="greedy",
                     show_default=True, help="How to decode each z."),
        click.option("--beam", type=int, default=5, show_default=True, help="Beam width (--decode beam)."),
        click.option("--length-penalty", type=float, default=1.0, show_default=True,
                     help="Beam: rank by log-prob / length^this (0: raw log-prob)."),
        click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature."),
        click.option("--top-k", type=int, default=0, show_default=True, help="Sample from the k likeliest words (0: all)."),
        click.option("--max-len", type=int, default=None, help="Maximum tokens decoded [default: the run's --max-len + 1]."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON (with the z of each sentence)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
                     help="best.pt (best validation ELBO) or checkpoint.pt."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pyro-svae")
def cli():
    """Sentence VAEs in Pyro (Bowman et al. 2015): train, decode and interpolate, evaluate, impute,
    and compare variational families."""


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--resume", type=click.Path(), help="Continue the run in this directory (budget options may change).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@train_options
def train(out, resume, quiet, **options):
    """Train a sentence VAE (or the LM baseline) with SVI.

    Example: python cli.py train --data data/ptb --out runs/ptb --max-minutes 30
    """
    from pyro_svae.training import train as run_training

    from pyro_svae.training import check_store_options

    given = {k: v for k, v in options.items() if v is not None}
    if resume:
        summary = run_training(out_dir=resume, resume=True, overrides=given, progress=not quiet, log=_log)
    else:
        if not out or not given.get("data"):
            raise click.UsageError("train needs --data and --out (or --resume RUN)")
        check_store_options(given["data"], given)
        summary = run_training(config_from(**given), out, progress=not quiet, log=_log)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, process 0 reports
        sys.exit(130 if summary["stopped"] == "interrupted" else 0)
    run, world = summary["run"], int(os.environ.get("WORLD_SIZE", "1"))
    again = f"torchrun --nproc_per_node {world} cli.py" if world > 1 else "python cli.py"
    _log(f"stopped ({summary['stopped']}) at step {summary['step']}, epoch {summary['epoch']}; "
         f"best validation ELBO {summary['best_elbo']:.2f}")
    steps, seconds = len(summary["losses"]), max(summary["train_seconds"], 1e-9)
    if steps:
        _log(f"trained {steps} steps in {seconds:.0f} s without validation: {steps / seconds:.2f} steps/s, "
             f"{summary['tokens'] / seconds:,.0f} real tokens/s")
    _log(f"run: {run}  (metrics.csv, checkpoint.pt, best.pt); resume with: {again} train --resume {run}")
    if summary["stopped"] == "interrupted":
        sys.exit(130)


@cli.command()
@click.option("--data", required=True, help="Text corpus: a folder with train/valid/test files, or one file split 90/5/5.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the token store to write.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Encoding processes (0: one per CPU for corpora over 16 MB, else one).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@functools.partial(train_options, names=STORE_OPTIONS)
def prepare(data, out, workers, quiet, **options):
    """Encode a text corpus once into a token store (memory-mapped; for corpora larger than memory).

    Train on it with train --data STORE; several runs can share one store.

    Example: python cli.py prepare --data data/ptb --out stores/ptb
    """
    from pyro_svae.store import StoreOptions, is_store, prepare_store
    from pyro_svae.training import check_config

    options = StoreOptions(**{k: v for k, v in options.items() if v is not None})
    check_config(TrainConfig(**vars(options)))
    if workers < 0:
        raise SVAEError(f"--workers {workers}: must be >= 0")
    if is_store(out):
        raise SVAEError(f"{out} already holds a token store; remove it or pick another --out")
    _, splits, _ = prepare_store(data, out, options, workers, log=_log, progress=not quiet)
    _log(f"store: {out}  ({', '.join(f'{k} {len(v)}' for k, v in splits.items())} sentences); "
         f"train with: python cli.py train --data {out} --out RUN")


def _explorer(run, device, checkpoint, seed):
    import pyro
    from pyro_svae.trained import load

    pyro.set_rng_seed(seed)
    return load(run, device=device, which=checkpoint, warn=lambda m: _log(f"warning: {m}"))


def _search(o):
    kw = {"strategy": o["strategy"], "max_len": o["max_len"]}
    if o["strategy"] == "beam":
        kw.update(beam=o["beam"], length_penalty=o["length_penalty"])
    if o["strategy"] == "sample":
        kw.update(temperature=o["temperature"], top_k=o["top_k"])
    if o["max_len"] is not None and o["max_len"] < 1:
        raise SVAEError("--max-len must be at least 1")
    return kw


def _emit(rows, as_json):
    """rows: dicts with 'text' (and 'z', 'input', ...). Plain mode prints one sentence a line."""
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "label"} for r in rows], indent=1))
        return
    for row in rows:
        prefix = f"{row['label']}\t" if "label" in row else ""
        click.echo(prefix + row["text"])


def _rows(z, texts, **columns):
    rows = []
    for i, text in enumerate(texts):
        row = {k: v[i] for k, v in columns.items()}
        row["text"] = text
        if z is not None:
            row["z"] = [round(float(x), 5) for x in z[i]]
        rows.append(row)
    return rows


def _read_sentences(sentences, input_file):
    from pyro_svae.corpus import read_sentences

    sentences = list(sentences)
    if input_file:
        lines, stats = read_sentences(input_file)
        if stats.undecodable:
            raise SVAEError(f"{input_file}: line {stats.undecodable[0]} is not UTF-8")
        sentences += lines
    if not sentences:
        raise SVAEError("no sentence given (pass sentences as arguments or --input FILE)")
    return sentences


@cli.command()
@click.argument("run", type=click.Path())
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="How many sentences.")
@click.option("--component", type=int, default=None, help="A mixture prior: draw z from this component only.")
@decoding_options
def sample(run, n, component, seed, device, checkpoint, as_json, **o):
    """Decode sentences from z drawn from the prior.

    Example: python cli.py sample runs/ptb -n 5 --decode beam
    """
    vae = _explorer(run, device, checkpoint, seed)
    z, texts = vae.sample(n, component=component, **_search(o))
    _emit(_rows(z, texts), as_json)


@cli.command()
@click.argument("run", type=click.Path())
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True)
@click.option("--input", "input_file", type=click.Path(), help="Cluster this file of sentences instead of a split.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Sentences and words shown per cluster.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="The first N sentences only.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (the q(z|x) draws of an enum run).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
def clusters(run, split, input_file, top, limit, as_json, seed, device, checkpoint):
    """A mixture prior's components as clusters: size, most probable sentences, characteristic words.

    Each sentence goes to its most probable component under q(c|x) (concrete, reinforce) or
    E_q(z|x) p(c|z) (enum). Example: python cli.py clusters runs/mix --split test --top 5
    """
    vae = _explorer(run, device, checkpoint, seed)
    data = vae.split(split, input_file, limit)
    result = vae.clusters(data, top=top)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    n = sum(c["size"] for c in result)
    used = sum(1 for c in result if c["size"])
    click.echo(f"{input_file or split}: {n} sentences in {used} of {len(result)} components")
    empty = [str(c["component"]) for c in result if not c["size"]]
    for c in result:
        if not c["size"]:
            continue
        click.echo(f"\ncomponent {c['component']}: {c['size']} sentences ({c['size'] / max(n, 1):.1%}), "
                   f"prior weight {c['weight']:.3f}")
        if c["words"]:
            click.echo("  words: " + " ".join(c["words"]))
        for text in c["sentences"]:
            click.echo(f"  - {text}")
    if empty:
        click.echo(f"\nempty: component{'s' if len(empty) > 1 else ''} {', '.join(empty)} (no sentence is most probable there)")


@cli.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--input", "input_file", type=click.Path(), help="A file of sentences, one per line.")
@decoding_options
def reconstruct(run, sentences, input_file, seed, device, checkpoint, as_json, **o):
    """Decode the posterior mean of each sentence.

    Example: python cli.py reconstruct runs/ptb "the company said it would n't comment"
    """
    sentences = _read_sentences(sentences, input_file)
    vae = _explorer(run, device, checkpoint, seed)
    z, texts = vae.reconstruct(sentences, **_search(o))
    rows = _rows(z, texts, input=sentences)
    for row in rows:
        row["label"] = row["input"]
    _emit(rows, as_json)


@cli.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--input", "input_file", type=click.Path(), help="A file of sentences, one per line.")
@click.option("-n", "n", type=click.IntRange(min=1), default=5, show_default=True, help="Draws per sentence.")
@decoding_options
def posterior(run, sentences, input_file, n, seed, device, checkpoint, as_json, **o):
    """Decode n draws z ~ q(z|x) for each sentence (Bowman's sampling from the posterior).

    Example: python cli.py posterior runs/ptb "we looked out at the setting sun" -n 5
    """
    sentences = _read_sentences(sentences, input_file)
    vae = _explorer(run, device, checkpoint, seed)
    z, texts = vae.posterior(sentences, n=n, **_search(o))
    inputs = [s for s in sentences for _ in range(n)]
    rows = _rows(z, texts, input=inputs, draw=[i % n + 1 for i in range(len(inputs))])
    if not as_json:
        for s_index, s in enumerate(sentences):
            click.echo(f"INPUT: {s}")
            for row in rows[s_index * n : (s_index + 1) * n]:
                click.echo(f"  {row['draw']}\t{row['text']}")
        return
    _emit(rows, as_json)


@cli.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--steps", type=click.IntRange(min=2), default=5, show_default=True, help="Points on the line, endpoints included.")
@click.option("--from-prior", is_flag=True, help="Interpolate between two prior draws instead of two sentences.")
@decoding_options
def homotopy(run, sentences, steps, from_prior, seed, device, checkpoint, as_json, **o):
    """Decode evenly spaced points between the posterior means of two sentences.

    Example: python cli.py homotopy runs/ptb "i want to talk to you ." "she did n't want to be with him ." --steps 5
    """
    if not from_prior and len(sentences) != 2:
        raise click.UsageError("homotopy needs exactly two sentences (or --from-prior)")
    if from_prior and sentences:
        raise click.UsageError("--from-prior takes no sentences")
    vae = _explorer(run, device, checkpoint, seed)
    first, second = sentences if sentences else (None, None)
    z, texts = vae.homotopy(first, second, steps=steps, from_prior=from_prior, **_search(o))
    t = [round(i / (steps - 1), 4) for i in range(steps)]
    rows = _rows(z, texts, t=t, label=[f"{x:.2f}" for x in t])
    _emit(rows, as_json)


@cli.command()
@click.argument("run", type=click.Path())
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True,
              help="Which of the run's splits to score.")
@click.option("--input", "input_file", type=click.Path(), help="Score this file of sentences instead of a split.")
@click.option("--iw-samples", type=click.IntRange(min=1), default=500, show_default=True,
              help="K: draws from q(z|x) for the importance-weighted NLL.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Sentences at once.")
@click.option("--chunk", type=click.IntRange(min=1), default=50, show_default=True,
              help="IW draws folded into the batch at once (memory: batch x chunk sentences).")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Score the first N sentences only.")
@click.option("--per-sentence", type=click.Path(dir_okay=False), help="Write per-sentence results (JSON lines) here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--refine", type=click.IntRange(min=0), default=0,
              help="Refine q(z|x) per sentence by N SVI steps from the guide's parameters (semi-amortized "
                   "inference) before scoring: NLL, ELBO and KL use the refined q, a tighter IW proposal; "
                   "the amortized ELBO is printed beside it.")
@click.option("--widen", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Draw the IW samples from the diag q(z|x) with its standard deviations times this "
                   "(an overdispersed proposal; 1: q itself).")
@click.option("--amp", type=click.Choice(["off", "bf16"]), default="off", show_default=True,
              help="bf16: the decoder's matrix products in bfloat16 (CUDA tensor cores, AMX CPUs); "
                   "log-softmax and latent densities stay float32.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(run, split, input_file, iw_samples, batch_size, chunk, limit, per_sentence, seed, as_json, device,
             checkpoint, refine, widen, amp, quiet):
    """Score a split: IW-NLL (K samples), ELBO, reconstruction, KL, both perplexities, MI, active units.

    Example: python cli.py evaluate runs/ptb --split test --iw-samples 500
    """
    vae = _explorer(run, device, checkpoint, seed)
    data = vae.split(split, input_file, limit)
    result = vae.evaluate(data, iw_samples, batch_size=batch_size, chunk=chunk, seed=seed, progress=not quiet,
                          amp=amp, refine=refine, widen=widen)
    totals = result["totals"]
    totals["split"] = input_file or split
    if per_sentence:
        with open(per_sentence, "w") as f:
            for i, row in enumerate(result["sentences"]):
                f.write(json.dumps({"index": i, **row}) + "\n")
    if as_json:
        click.echo(json.dumps(totals, indent=1))
        return
    lm = vae.z_dim == 0
    click.echo(f"{totals['split']}: {totals['sentences']} sentences, {totals['tokens']} tokens (</s> counted)")
    bound = "exact, no latent" if lm else f"IW, K={iw_samples}" + (f", q refined by {refine} steps" if refine else "")
    bound += f", q widened x{widen:g}" if widen != 1 and not lm else ""
    click.echo(f"NLL      {totals['nll']:.2f} nats/sentence  ({bound}{', bf16 decoder' if amp == 'bf16' else ''})")
    click.echo(f"PPL      {totals['ppl_iw']:.2f}  ({'exact' if lm else 'from the IW NLL'})")
    if not lm:
        click.echo(f"ELBO     {totals['elbo']:.2f}  (rec {totals['rec']:.2f} + KL {totals['kl']:.2f}); "
                   f"PPL bound {totals['ppl_elbo']:.2f}")
        mi = totals["mutual_information"]
        click.echo(f"MI       {'n/a (point estimate)' if mi is None else f'{mi:.3f} nats'}")
        click.echo(f"AU       {totals['active_units']} of {len(totals['au_variances'])} dimensions (Cov >= 0.01)")
        if "clusters_in_use" in totals:
            click.echo(f"clusters {totals['clusters_in_use']:.2f} in use (exp of the entropy "
                       f"{totals['component_entropy']:.3f} of the average component posterior)")
    if refine and not lm:
        gap = totals["elbo"] - totals["elbo_amortized"]
        what = f"amortization gap >= {gap:.2f} nats/sentence" if widen == 1 else f"of the q widened x{widen:g}"
        click.echo(f"refined  ELBO {totals['elbo_amortized']:.2f} (amortized q) -> {totals['elbo']:.2f} after {refine} "
                   f"steps ({what})")


@cli.command("grad-variance")
@click.argument("run", type=click.Path())
@click.option("--estimators", default=None,
              help="Comma-separated. For z: reparam (pathwise), reinforce (score function, TraceGraph_ELBO), "
                   "reinforce+baseline (with a decaying-average baseline) [default: all three]. For --site c: "
                   "enum (exact sum over c), reinforce, reinforce+baseline (the run's learned baseline), concrete "
                   "[default: all four].")
@click.option("--site", type=click.Choice(["z", "c"]), default="z", show_default=True,
              help="c: the gradient w.r.t. q(c|x) of a mixture run trained with --discrete concrete or reinforce.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="--site c: the Concrete estimator's temperature.")
@click.option("--samples", type=click.IntRange(min=2), default=200, show_default=True, help="Gradient draws per estimator.")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="valid", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Sentences in the batch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def grad_variance(run, estimators, site, temperature, samples, split, batch_size, seed, as_json, device, checkpoint,
                  quiet):
    """Variance of the ELBO gradient w.r.t. the guide's parameters, per estimator.

    Example: python cli.py grad-variance runs/ptb --estimators reparam,reinforce --samples 200
    """
    from pyro_svae.gradients import DISCRETE_ESTIMATORS, ESTIMATORS

    known = DISCRETE_ESTIMATORS if site == "c" else ESTIMATORS
    names = [e.strip() for e in (estimators or ",".join(known)).split(",") if e.strip()]
    unknown = [e for e in names if e not in known]
    if unknown or not names:
        raise SVAEError(f"unknown estimator {', '.join(unknown) or '(none)'}; use {', '.join(known)}")
    vae = _explorer(run, device, checkpoint, seed)
    if site == "c":
        report = vae.component_grad_variance(split, names, samples, batch_size, temperature, progress=not quiet)
        if as_json:
            click.echo(json.dumps(report, indent=1))
            return
        click.echo("q(c|x)     estimator            |mean grad|  +- stderr     variance     x enum   |bias|")
        exact = report.get("enum")
        for estimator, r in report.items():
            ratio = f"{r['variance'] / exact['variance']:.1f}" if exact else "-"
            click.echo(f"{'c':<10} {estimator:<20} {r['mean_norm']:>10.3f}  {r['mean_stderr']:>9.3f} "
                       f"{r['variance']:>12.3f}  {ratio:>9}  {r['bias_norm']:>7.3f}")
        return
    report = vae.grad_variance(split, names, samples, batch_size, progress=not quiet)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    base = report.get("reparam")
    click.echo("group      estimator            |mean grad|  +- stderr     variance   x reparam")
    for estimator, groups in report.items():
        for group, r in groups.items():
            ratio = f"{r['variance'] / base[group]['variance']:.1f}" if base else "-"
            click.echo(f"{group:<10} {estimator:<20} {r['mean_norm']:>10.3f}  {r['mean_stderr']:>9.3f} "
                       f"{r['variance']:>12.3f}   {ratio:>9}")


@cli.command("compare-guides")
@click.option("--guides", default=None,
              help="Comma-separated guide specs [default: diag,lowrank:4,fullrank,iaf:2,delta; "
                   "with --prior hier: hier-meanfield,hier-structured].")
@click.option("--budget", type=float, default=10.0, show_default=True, help="Training minutes per guide.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/compare-guides", show_default=True)
@click.option("--iw-samples", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@train_options
def compare_guides(guides, budget, out_dir, iw_samples, split, quiet, **options):
    """Train the same model with each guide under one budget and seed; write results.md and results.png.

    Example: python cli.py compare-guides --data data/ptb --guides diag,lowrank:4,fullrank,iaf:2,delta --budget 10
    """
    from pyro_svae.compare import compare_guides as run_comparison

    given = {k: v for k, v in options.items() if v is not None}
    if "guide" in given:
        raise click.UsageError("use --guides (several) with compare-guides")
    if not given.get("data"):
        raise click.UsageError("compare-guides needs --data")
    hier = given.get("prior") == "hier"
    specs = [g.strip() for g in (guides or ("hier-meanfield,hier-structured" if hier else
                                            "diag,lowrank:4,fullrank,iaf:2,delta")).split(",") if g.strip()]
    config = config_from(**{"max_minutes": budget, **given})
    rows, plotted = run_comparison(config, specs, out_dir, iw_samples, split, log=_log, progress=not quiet)
    click.echo(open(os.path.join(out_dir, "results.md")).read().rstrip())
    click.echo(f"table: {out_dir}/results.md" + (f"; plot: {out_dir}/results.png" if plotted else
                                                 " (no plot: pip install matplotlib)"))


@cli.command()
@click.argument("run", type=click.Path())
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True)
@click.option("--drop-fraction", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.2, show_default=True,
              help="Remove this fraction of each sentence's last words (at least one).")
@click.option("--beam", type=click.IntRange(min=1), default=15, show_default=True, help="Beam width.")
@click.option("--icm-iters", type=click.IntRange(min=0), default=3, show_default=True,
              help="Iterated conditional modes: alternations of z and the missing words.")
@click.option("--baseline", type=click.Path(), help="A language-model run (train --model lm) to compare with.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Only the first N sentences.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="TSV path [default: RUN/impute-SPLIT.tsv].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the adversarial results as JSON.")
@click.option("--device", default="auto", show_default=True)
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def impute(run, split, drop_fraction, beam, icm_iters, baseline, limit, batch_size, out_file, seed, as_json,
           device, checkpoint, quiet):
    """Complete sentence endings (VAE by ICM, LM by beam search) and score them adversarially.

    Example: python cli.py impute runs/ptb --split test --baseline runs/ptb-lm --limit 500
    """
    vae = _explorer(run, device, checkpoint, seed)
    lm = _explorer(baseline, device, checkpoint, seed) if baseline else None
    if lm is not None and lm.z_dim > 0:
        raise SVAEError(f"{baseline}: the baseline must be a language model (train --model lm)")
    rows, report = vae.impute(split, lm, drop_fraction, beam, icm_iters, limit, batch_size, seed, not quiet)
    out_file = out_file or os.path.join(run, f"impute-{split}.tsv")
    columns = ["prefix", "truth", "vae", "lm"]
    with open(out_file, "w", encoding="utf-8") as f:
        f.write("\t".join(columns) + "\n")
        for row in rows:
            f.write("\t".join(row[c] or "" for c in columns) + "\n")
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    for row in rows[:5]:
        click.echo(f"{row['prefix']} ___\n  truth: {row['truth']}"
                   + (f"\n  vae:   {row['vae']}" if row["vae"] is not None else "")
                   + (f"\n  lm:    {row['lm']}" if row["lm"] is not None else ""))
    click.echo(f"{len(rows)} sentences; all completions in {out_file}")
    for model, classifiers in report.items():
        parts = [f"{name} accuracy {r['accuracy']:.1%} (adversarial error {100 * r['error']:.1f} points)"
                 for name, r in classifiers.items()]
        click.echo(f"{model.upper()}: " + "; ".join(parts))


def _log(message):
    click.echo(message, err=True)


@cli.command()
@click.argument("run", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, which exposes the model).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: any free one).")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="valid", show_default=True,
              help="The split whose sentences the map shows.")
@click.option("--map-size", type=click.IntRange(2, 2000), default=1000, show_default=True,
              help="Sentences on the map (the split's first ones).")
@click.option("--projection", type=click.Choice(["auto", "pca", "umap"]), default="auto", show_default=True,
              help="How the map shows z in 2-D: PCA, or UMAP (needs umap-learn); auto: UMAP where installed.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best.pt (best validation ELBO) or checkpoint.pt.")
def serve(run, host, port, split, map_size, projection, open_browser, device, checkpoint):
    """Explore a run in a local web page: map of the latent space, homotopies, posterior and prior
    samples, training curves; its JSON API is documented at /docs.

    Example: python cli.py serve runs/ptb --open
    """
    try:
        import uvicorn

        from pyro_svae.explorer import create_app
    except ImportError as e:
        raise SVAEError(f"serve needs the web extra ({e.name} is missing): pip install -e '.[web]'") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        _log(f"warning: listening on {host}: anyone who can reach this machine can use the model")
    app = create_app(run, split=split, device=device, checkpoint=checkpoint, map_size=map_size, projection=projection)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{bound}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    def announce():
        import time
        import webbrowser

        while not server.started:
            time.sleep(0.05)
        _log(f"serving {run} at {url}  (API: {url}docs; Ctrl-C stops)")
        if open_browser:
            webbrowser.open(url)

    import threading

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


def _listen(host, port):
    """A listening socket on (host, port), or a one-line error (port taken, address not here)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SVAEError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port (0: any free one)") from None
    sock.listen(128)
    return sock


def main(argv=None):
    """Entry point: runs the CLI and turns bad input into a one-line error with exit status 1 or 2."""
    try:
        cli.main(args=argv, prog_name="pyro-svae", standalone_mode=False)
    except SVAEError as e:
        rank = os.environ.get("RANK", "0")  # under torchrun: which process failed, if not the first
        click.echo(f"error: {'' if rank == '0' else f'[process {rank}] '}{e}", err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except OSError as e:
        click.echo(f"error: {e.filename or ''}: {e.strerror or e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
