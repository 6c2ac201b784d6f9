"""sample, reconstruct, posterior and homotopy: decoding from the prior and the posterior."""

import click

from ...errors import SVAEError
from .options import Emitter, _explorer, _read_sentences, _rows, _search, decoding_options


@click.command()
@click.argument("run", type=click.Path())
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="How many sentences.")
@click.option("--component", type=int, default=None, help="A mixture prior: draw z from this component only.")
@click.option("--label", default=None, help="A --prior class run: decode under this label [default: y ~ p(y)].")
@click.option("--sentences", type=click.IntRange(min=1, max=256), default=None,
              help="A --prior chain run: n documents of this many sentences [default: one document of n].")
@decoding_options(unk=False)
def sample(run, n, component, label, sentences, seed, device, checkpoint, as_json, **o):
    """Decode sentences from z drawn from the prior.

    Example: python cli.py sample runs/ptb -n 5 --decode beam
    """
    vae = _explorer(run, device, checkpoint, seed)
    with Emitter(as_json) as out:
        if hasattr(vae, "chain"):  # documents: each sentence's document and place beside it
            T = sentences or n
            for first, z, texts in vae.iter_sample_documents(n if sentences else 1, T, **_search(o)):
                docs = [first + i // T + 1 for i in range(len(texts))]
                places = [i % T + 1 for i in range(len(texts))]
                out.write(_rows(z.reshape(len(texts), -1), texts, document=docs, sentence=places,
                                label=[f"{d}.{t}" for d, t in zip(docs, places)]))
            return
        if sentences is not None:
            raise SVAEError("--sentences is for a --prior chain run (documents)")
        if hasattr(vae, "iter_sample_labeled"):  # a --prior class run: each sentence's class beside it
            if component is not None:
                raise SVAEError("--component is for a mixture prior; a --prior class run takes --label")
            for names, z, texts in vae.iter_sample_labeled(n, label, **_search(o)):
                out.write(_rows(z, texts, **{"class": names, "label": names}))
            return
        for z, texts in vae.iter_sample(n, component=component, label=label, **_search(o)):
            out.write(_rows(z, texts))


@click.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--input", "input_file", type=click.Path(), help="A file of sentences, one per line.")
@decoding_options(unk=True)
def reconstruct(run, sentences, input_file, seed, device, checkpoint, as_json, **o):
    """Decode the posterior mean of each sentence.

    Example: python cli.py reconstruct runs/ptb "the company said it would n't comment"
    """
    sentences = _read_sentences(sentences, input_file)
    vae = _explorer(run, device, checkpoint, seed)
    with Emitter(as_json) as out:
        done = 0
        for z, texts in vae.iter_reconstruct(sentences, **_search(o)):
            inputs = sentences[done : done + len(texts)]
            out.write(_rows(z, texts, input=inputs, label=inputs))
            done += len(texts)


@click.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--input", "input_file", type=click.Path(), help="A file of sentences, one per line.")
@click.option("-n", "n", type=click.IntRange(min=1), default=5, show_default=True, help="Draws per sentence.")
@decoding_options(unk=True)
def posterior(run, sentences, input_file, n, seed, device, checkpoint, as_json, **o):
    """Decode n draws z ~ q(z|x) for each sentence (Bowman's sampling from the posterior).

    Example: python cli.py posterior runs/ptb "we looked out at the setting sun" -n 5
    """
    sentences = _read_sentences(sentences, input_file)
    vae = _explorer(run, device, checkpoint, seed)
    with Emitter(as_json) as out:
        current, draw = None, 0
        for which, z, texts in vae.iter_posterior(sentences, n=n, **_search(o)):
            for i, row in zip(which, _rows(z, texts, input=[sentences[i] for i in which])):
                if i != current:
                    current, draw = i, 0
                    if not as_json:
                        click.echo(f"INPUT: {sentences[i]}")
                draw += 1
                out.write([{**row, "draw": draw, "label": f"  {draw}"}])


@click.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--steps", type=click.IntRange(min=2), default=5, show_default=True, help="Points on the line, endpoints included.")
@click.option("--from-prior", is_flag=True, help="Interpolate between two prior draws instead of two sentences.")
@decoding_options(unk=False)
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
    with Emitter(as_json) as out:
        for t, z, texts in vae.iter_homotopy(first, second, steps=steps, from_prior=from_prior, **_search(o)):
            t = [round(x, 4) for x in t]
            out.write(_rows(z, texts, t=t, label=[f"{x:.2f}" for x in t]))
