"""evaluate, grad-variance, impute and clusters: what a trained model measures."""

import json
import os

import click

from ...errors import SVAEError
from ...models.decoding import make_strategy
from ...training.documents import whole_documents
from .options import _explorer


@click.command()
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


@click.command()
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
@click.option("--max-words", type=click.IntRange(min=0), default=0,
              help="Only sentences of at most N words (whitespace words of the text, whatever the tokenizer; "
                   "with --limit: the first N such sentences; 0: all).")
@click.option("--per-sentence", type=click.Path(dir_okay=False), help="Write per-sentence results (JSON lines) here.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--refine", type=click.IntRange(min=0), default=0,
              help="Refine q(z|x) per sentence by N SVI steps from the guide's parameters (semi-amortized "
                   "inference) before scoring: NLL, ELBO and KL use the refined q, a tighter IW proposal; "
                   "the amortized ELBO is printed beside it.")
@click.option("--refine-iw", type=click.IntRange(min=0), default=0,
              help="Then refine q per sentence by N steps on its importance-weighted bound (--refine-draws draws), "
                   "which fits q as a proposal rather than as a posterior: a tighter NLL, a lower ELBO.")
@click.option("--refine-draws", type=click.IntRange(min=1), default=8, show_default=True,
              help="Draws of the importance-weighted bound that --refine-iw climbs.")
@click.option("--widen", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Draw the IW samples from the diag q(z|x) with its standard deviations times this "
                   "(an overdispersed proposal; 1: q itself).")
@click.option("--amp", type=click.Choice(["off", "bf16"]), default="off", show_default=True,
              help="bf16: the decoder's matrix products in bfloat16 (CUDA tensor cores, AMX CPUs); "
                   "log-softmax and latent densities stay float32.")
@click.option("--decode", type=click.Choice(["greedy", "beam"]), default="greedy", show_default=True,
              help="How the posterior mean of each sentence is decoded for the reconstruction metrics.")
@click.option("--beam", type=click.IntRange(min=1), default=5, show_default=True, help="Beam width (--decode beam).")
@click.option("--rerank", is_flag=True,
              help="--decode beam: choose the candidate x' that best explains z both ways, log p(x'|z) + log q(z|x').")
@click.option("--documents", "documents", is_flag=True,
              help="A run trained on a document store: score its documents (NLL per document and of each sentence "
                   "given the earlier ones; always so for --prior chain and for the LM of whole documents).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(run, split, input_file, iw_samples, batch_size, chunk, limit, max_words, per_sentence, seed, as_json,
             device, checkpoint, refine, refine_iw, refine_draws, widen, amp, decode, beam, rerank, documents, quiet):
    """Score a split: IW-NLL (K samples), ELBO, reconstruction, KL, both perplexities, MI, active units,
    and how much of each sentence its decoded posterior mean keeps (BLEU, token accuracy, content words).

    Example: python cli.py evaluate runs/ptb --split test --iw-samples 500
    """
    make_strategy(decode, beam=beam, rerank=rerank)  # a bad combination fails before the scoring
    vae = _explorer(run, device, checkpoint, seed)
    if documents or whole_documents(vae.config["train"]):
        if max_words:
            raise SVAEError("--max-words picks sentences: it is not for scoring documents")
        from .documents import report_documents

        return report_documents(vae, split, input_file, iw_samples, batch_size, limit, seed, as_json, quiet)
    data = vae.split(split, input_file, limit, max_words)
    result = vae.evaluate(data, iw_samples, batch_size=batch_size, chunk=chunk, seed=seed, progress=not quiet,
                          amp=amp, refine=refine, widen=widen, refine_iw=refine_iw, refine_draws=refine_draws)
    totals = result["totals"]
    totals["split"] = input_file or split
    rows = result["sentences"]
    if hasattr(vae, "classify"):  # a --prior class run
        return _report_labeled(totals, rows, per_sentence, as_json, iw_samples)
    if vae.z_dim:
        rec = vae.reconstruction(data, decode=decode, beam=beam, batch_size=batch_size, rerank=rerank)
        totals["reconstruction"] = rec["totals"]
        rows = [{**row, **r} for row, r in zip(rows, rec["sentences"])]
    _write_rows(per_sentence, rows)
    if as_json:
        click.echo(json.dumps(totals, indent=1))
        return
    lm = vae.z_dim == 0
    click.echo(f"{totals['split']}: {totals['sentences']} sentences, {totals['tokens']} tokens (</s> counted)")
    bound = "exact, no latent" if lm else f"IW, K={iw_samples}" + (f", q refined by {refine} steps" if refine else "")
    if refine_iw and not lm:
        bound += f"{', then' if refine else ', q refined by'} {refine_iw} steps on its {refine_draws}-draw IW bound"
    bound += f", q widened x{widen:g}" if widen != 1 and not lm else ""
    click.echo(f"NLL      {totals['nll']:.2f} nats/sentence  ({bound}{', bf16 decoder' if amp == 'bf16' else ''})")
    click.echo(f"PPL      {totals['ppl_iw']:.2f}  ({'exact' if lm else 'from the IW NLL'})")
    if not lm:
        click.echo(f"ELBO     {totals['elbo']:.2f}  (rec {totals['rec']:.2f} + KL {totals['kl']:.2f}); "
                   f"PPL bound {totals['ppl_elbo']:.2f}")
        mi = totals["mutual_information"]
        click.echo(f"MI       {'n/a (point estimate)' if mi is None else f'{mi:.3f} nats'}")
        click.echo(f"AU       {totals['active_units']} of {len(totals['au_variances'])} dimensions (Cov >= 0.01)")
        r = totals["reconstruction"]
        click.echo(f"reconstruction ({r['decode']}): BLEU {r['bleu']:.3f}, token accuracy {r['token_accuracy']:.3f}, "
                   f"content words kept {r['content_kept']:.3f}, exact {r['exact']:.3f}")
        for bucket, b in r["by_length"].items():
            click.echo(f"  length {bucket:>6}: {b['sentences']} sentences, BLEU {b['bleu']:.3f}, "
                       f"content words kept {b['content_kept']:.3f}")
        if "clusters_in_use" in totals:
            click.echo(f"clusters {totals['clusters_in_use']:.2f} in use (exp of the entropy "
                       f"{totals['component_entropy']:.3f} of the average component posterior)")
    if refine and not refine_iw and not lm:
        gap = totals["elbo"] - totals["elbo_amortized"]
        what = f"amortization gap >= {gap:.2f} nats/sentence" if widen == 1 else f"of the q widened x{widen:g}"
        click.echo(f"refined  ELBO {totals['elbo_amortized']:.2f} (amortized q) -> {totals['elbo']:.2f} after {refine} "
                   f"steps ({what})")
    elif refine_iw and not lm:
        click.echo(f"refined  ELBO {totals['elbo_amortized']:.2f} (amortized q) -> {totals['elbo']:.2f} (the proposal "
                   f"fitted to the IW bound: not the amortization gap)")


def _write_rows(path, rows):
    """--per-sentence: one JSON line per sentence (nothing without a path)."""
    if path:
        with open(path, "w") as f:
            for i, row in enumerate(rows):
                f.write(json.dumps({"index": i, **row}) + "\n")


def _report_labeled(totals, rows, per_sentence, as_json, iw_samples):
    _write_rows(per_sentence, rows)
    if as_json:
        click.echo(json.dumps(totals, indent=1))
        return
    click.echo(f"{totals['split']}: {totals['sentences']} sentences, {totals['tokens']} tokens (</s> counted)")
    click.echo(f"NLL      {totals['nll']:.2f} nats/sentence  (IW, K={iw_samples} per class, the label summed out)")
    click.echo(f"PPL      {totals['ppl_iw']:.2f}")
    click.echo(f"ELBO     {totals['elbo']:.2f}")
    if totals["labeled"]:
        click.echo(f"accuracy {totals['accuracy']:.3f} of q(y|x) on {totals['labeled']} labeled sentences")
        for name, c in totals["per_class"].items():
            if c["sentences"]:
                click.echo(f"  class {name}: {c['sentences']} sentences, accuracy {c['accuracy']:.3f}, "
                           f"NLL given the label {c['nll_given_label']:.2f}")


@click.command("grad-variance")
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
    from ...inference.gradients import DISCRETE_ESTIMATORS, ESTIMATORS

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


@click.command()
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
