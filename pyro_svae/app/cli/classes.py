"""classify and transfer: a --prior class run's q(y | x), and decoding a sentence under another class."""

import click

from ...errors import SVAEError
from .options import Emitter, _explorer, _read_sentences, _rows, _search, decoding_options


def _labeled(run, device, checkpoint, seed, command):
    vae = _explorer(run, device, checkpoint, seed)
    if not hasattr(vae, "classify"):
        raise SVAEError(f"{command}: {run} has no classes (train with --prior class on a labeled corpus, --labels tab)")
    return vae


@click.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--input", "input_file", type=click.Path(), help="A file of sentences, one per line.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with every class's probability.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best.pt (best validation ELBO) or checkpoint.pt.")
def classify(run, sentences, input_file, as_json, device, checkpoint):
    """Classify sentences by q(y | x) of a --prior class run: the most probable label and its probability.

    Example: python cli.py classify runs/yelp-m2 "the food was great ." "never again ."
    """
    sentences = _read_sentences(sentences, input_file)
    vae = _labeled(run, device, checkpoint, 0, "classify")
    names = vae.labels
    with Emitter(as_json) as out:
        done = 0
        for probs in vae.iter_classify(sentences):
            best = probs.argmax(-1).tolist()
            rows = []
            for i, p in enumerate(probs.tolist()):
                sentence = sentences[done + i]
                rows.append({"sentence": sentence, "class": names[best[i]],
                             "probabilities": {n: round(x, 5) for n, x in zip(names, p)},
                             "label": f"{names[best[i]]}\t{p[best[i]]:.3f}", "text": sentence})
            out.write(rows)
            done += len(rows)


@click.command()
@click.argument("run", type=click.Path())
@click.argument("sentences", nargs=-1)
@click.option("--to", "to", required=True, help="The label to decode under.")
@click.option("--from", "given", default=None, help="The sentences' own label [default: predicted by q(y | x)].")
@click.option("--input", "input_file", type=click.Path(), help="A file of sentences, one per line.")
@decoding_options(unk=False)
def transfer(run, sentences, to, given, input_file, seed, device, checkpoint, as_json, **o):
    """Rewrite sentences in another class: z = E[z | x, y] under the sentence's own label, decoded under --to.

    Example: python cli.py transfer runs/yelp-m2 --to 0 "the food was great ."
    """
    sentences = _read_sentences(sentences, input_file)
    vae = _labeled(run, device, checkpoint, seed, "transfer")
    vae.label_id(to)
    with Emitter(as_json) as out:
        done = 0
        for source, texts in vae.iter_transfer(sentences, to, given, **_search(o)):
            inputs = sentences[done : done + len(texts)]
            out.write(_rows(None, texts, input=inputs, **{"from": source, "to": [to] * len(texts)},
                            label=[f"{s} -> {to}\t{x}" for s, x in zip(source, inputs)]))
            done += len(texts)
