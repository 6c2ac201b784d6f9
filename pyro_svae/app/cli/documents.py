"""continue and cloze: the document model's commands; evaluate's report for documents."""

import json

import click

from ...errors import SVAEError
from .options import Emitter, _explorer, _log, _rows, _search, decoding_options


def _chain(vae, command):
    if not hasattr(vae, "chain"):
        raise SVAEError(f"{command} needs a --prior chain run (documents as chains of sentence latents)")
    return vae


@click.command(name="continue")
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1, required=True)
@click.option("-n", "n", type=click.IntRange(min=1, max=256), default=3, show_default=True,
              help="How many sentences to add.")
@click.option("--mean", is_flag=True, help="Follow the chain's mean path from E_q[z_T] instead of drawing it.")
@decoding_options(unk=False)
def continue_(run, sentences, n, mean, seed, device, checkpoint, as_json, **o):
    """Continue a document: infer the chain on its sentences (filtering), then decode the next n.

    The sentences are arguments, or one argument cut after tokens ending in . ? or !.
    Example: python cli.py continue runs/stories "Tom went to the store." "He forgot his wallet." -n 2
    """
    vae = _chain(_explorer(run, device, checkpoint, seed), "continue")
    z, texts = vae.continue_document(list(sentences), n=n, mean=mean, **_search(o))
    with Emitter(as_json) as out:
        out.write(_rows(z, texts, sentence=list(range(1, n + 1)), label=[f"+{i}" for i in range(1, n + 1)]))


@click.command()
@click.argument("run", type=click.Path())
@click.argument("file", type=click.Path())
@click.option("--iw-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="K: draws from q(z|x) per story for a VAE's importance-weighted log-likelihood.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Stories at once.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="The first N items only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the accuracy and each item's choice as JSON.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def cloze(run, file, iw_samples, batch_size, limit, seed, as_json, device, checkpoint, quiet):
    """The Story Cloze task: for each story of four sentences, the more probable of two endings.

    FILE: a TSV with the header id s1 s2 s3 s4 ending1 ending2 answer. Any run trained on a document
    store: the chain model, a sentence VAE (each sentence alone, so the context cannot help) or the LM
    of whole documents. Example: python cli.py cloze runs/stories ../shared/data/stories/cloze.valid.tsv
    """
    vae = _explorer(run, device, checkpoint, seed)
    accuracy, choices, log_p = vae.cloze(file, iw_samples, batch_size, limit, seed, progress=not quiet)
    if as_json:
        click.echo(json.dumps({"accuracy": accuracy, "items": len(choices), "choices": choices,
                               "log_p": [[round(float(x), 4) for x in row] for row in log_p]}))
        return
    click.echo(f"{file}: {len(choices)} stories, accuracy {accuracy:.4f} (the ending of the more probable story)")


def report_documents(vae, split, input_file, iw_samples, batch_size, limit, seed, as_json, quiet):
    """evaluate for documents: NLL per document, per sentence, by position."""
    result = vae.evaluate_documents(split, iw_samples, batch_size, limit, seed, progress=not quiet,
                                    input_file=input_file)
    result["split"] = input_file or split
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    exact = vae.z_dim == 0
    how = "exact" if exact else f"IW, K={iw_samples}"
    click.echo(f"{result['split']}: {result['documents']} documents, {result['sentences']} sentences, "
               f"{result['tokens']} tokens (</s> counted)")
    click.echo(f"NLL      {result['nll']:.2f} nats/document, {result['nll_sentence']:.2f} nats/sentence ({how})")
    click.echo(f"PPL      {result['ppl']:.2f}")
    given = "  ".join(f"{t + 1}: {v:.2f}" for t, v in enumerate(result["by_position"]))
    click.echo(f"NLL of sentence t given sentences 1..t-1:  {given}")
    if "elbo" in result:
        click.echo(f"ELBO     {result['elbo']:.2f} nats/document; KL {result['kl_sentence']:.2f} nats/sentence")
    if not exact and not hasattr(vae, "chain"):
        _log("note: a sentence VAE scores each sentence alone (the earlier sentences cannot help)")
