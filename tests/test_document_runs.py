"""Trained document runs: training resumes exactly, the commands decode, the document measures of
the chain, of a sentence VAE and of the LM of whole documents, and the Story Cloze choice."""

import json
import random

import pytest
import torch
from pyro import poutine

from pyro_svae.app.trained import load
from pyro_svae.checkpoint import load_checkpoint
from pyro_svae.data.corpus import make_batch
from pyro_svae.data.documents import join_sentences, make_document_batch, read_cloze
from pyro_svae.errors import SVAEError
from pyro_svae.evaluation.documents import cloze_accuracy, concatenated_positions
from pyro_svae.training.run import train

from conftest import quiet, tiny_config

# a story: someone goes somewhere, does what one does there, and comes back
PEOPLE = ["tom", "ann", "the boy", "my aunt"]
PLACES = {"shop": "bought milk", "park": "ran a lap", "lake": "swam far", "library": "read a book"}


def story(rng):
    who, (place, did) = rng.choice(PEOPLE), rng.choice(sorted(PLACES.items()))
    return [f"{who} went to the {place} .", f"{who} {did} .", f"then {who} went home ."][: rng.choice([2, 3, 3])]


def document_corpus(folder, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, n in (("train", 120), ("valid", 16), ("test", 16)):
        (folder / f"{split}.txt").write_text("\n\n".join("\n".join(story(rng)) for _ in range(n)) + "\n")
    return folder


def doc_config(data, **kw):
    return tiny_config(data, **{"documents": "blank", "prior": "chain", "guide": "doc-conjugate", "batch_size": 8,
                                **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return document_corpus(tmp_path_factory.mktemp("stories") / "corpus")


@pytest.fixture(scope="module")
def chain_run(corpus, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "chain")
    train(doc_config(corpus, max_steps=60, lr=3e-3), run, log=quiet, progress=False)
    return run


@pytest.mark.parametrize("guide", ["doc-meanfield", "doc-structured", "doc-conjugate"])
def test_a_chain_run_resumes_exactly(corpus, tmp_path, guide):
    noisy = dict(guide=guide, dropout=0.2, word_keep=0.6, free_bits=0.5, eval_every=5)
    whole = train(doc_config(corpus, max_steps=12, **noisy), str(tmp_path / "a"), log=quiet, progress=False)
    first = train(doc_config(corpus, max_steps=7, **noisy), str(tmp_path / "b"), log=quiet, progress=False)
    rest = train(out_dir=str(tmp_path / "b"), resume=True, overrides={"max_steps": 12}, log=quiet, progress=False)
    assert first["losses"] + rest["losses"] == whole["losses"]  # bit for bit
    a = load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and "prior.weight" in a


def test_training_the_chain_learns_and_logs_per_document_and_sentence(chain_run):
    import csv
    import os

    rows = list(csv.DictReader(open(os.path.join(chain_run, "metrics.csv"))))
    assert [r["step"] for r in rows] == ["10", "20", "30", "40", "50", "60"]
    assert float(rows[-1]["val_elbo"]) > float(rows[0]["val_elbo"]) + 5  # per document
    docs = json.load(open(os.path.join(chain_run, "config.json")))["counts"]["valid"]
    ratio = float(rows[-1]["val_elbo"]) / float(rows[-1]["val_elbo_sentence"])
    assert ratio == pytest.approx(docs["sentences"] / docs["documents"], rel=1e-3)


def test_sample_sentences_and_continue_decode_on_a_tiny_run(chain_run, run_cli):
    code, out, err = run_cli("sample", chain_run, "-n", "2", "--sentences", "3", "--json", "--seed", "1")
    rows = json.loads(out)
    assert code == 0, err
    assert [(r["document"], r["sentence"]) for r in rows] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    vocabulary = set(" ".join(s for d in [story(random.Random(i)) for i in range(200)] for s in d).split())
    assert all(r["text"] and set(r["text"].split()) <= vocabulary for r in rows)
    again = json.loads(run_cli("sample", chain_run, "-n", "2", "--sentences", "3", "--json", "--seed", "1")[1])
    assert again == rows  # seeded

    code, out, err = run_cli("continue", chain_run, "tom went to the shop .", "tom bought milk .", "-n", "2",
                             "--json", "--mean")
    assert code == 0, err
    rows = json.loads(out)
    vae = load(chain_run)
    z = torch.tensor([r["z"] for r in rows])
    assert torch.allclose(z[1], z[0] @ vae.chain.prior.matrix, atol=1e-4)  # the chain's mean path
    assert [r["text"] for r in rows] == vae.decode(z)


def test_rerank_reads_the_sentence_head_of_doc_meanfield_alone(chain_run, corpus, tmp_path, run_cli):
    code, out, err = run_cli("sample", chain_run, "-n", "2", "--decode", "beam", "--rerank")
    assert code != 0 and err.strip() == "error: --rerank needs q(z_t|x_t) of one sentence: the doc-conjugate guide has none"
    run = str(tmp_path / "meanfield")
    train(doc_config(corpus, guide="doc-meanfield", max_steps=5), run, log=quiet, progress=False)
    code, out, err = run_cli("reconstruct", run, "ann went to the lake .", "ann swam far .", "--decode", "beam",
                             "--beam", "3", "--rerank", "--json")
    assert code == 0, err
    assert len(json.loads(out)) == 2


def test_reconstruct_and_homotopy_read_documents(chain_run, run_cli):
    code, out, _ = run_cli("reconstruct", chain_run, "ann went to the lake .", "ann swam far .", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, out, err = run_cli("homotopy", chain_run, "ann went to the lake . ann swam far .",
                             "tom went to the shop . tom bought milk .", "--steps", "3", "--json")
    assert code == 0, err
    assert [r["t"] for r in json.loads(out)] == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]  # 3 documents of 2


def test_the_lm_of_whole_documents_scores_a_sentence_as_its_prefix_does(corpus, tmp_path):
    run = str(tmp_path / "lm")
    train(tiny_config(corpus, documents="blank", model="lm", max_steps=20, batch_size=8), run, log=quiet,
          progress=False)
    lm = load(run)
    score = concatenated_positions(lm.svae)
    doc = lm.token_ids(["tom went to the shop .", "tom bought milk .", "then tom went home ."])
    with torch.no_grad():
        whole = score(make_document_batch([doc]))[0]
        for t in range(1, 4):  # the first t sentences alone: the same t terms (a causal model)
            assert score(make_document_batch([doc[:t]]))[0].tolist() == pytest.approx(whole[:t].tolist(), abs=1e-4)
        # and all of them: the model's log-likelihood of the joined sequence
        joined = make_batch([join_sentences(doc)])
        x = poutine.trace(lm.svae.model).get_trace(joined).nodes["x"]
        assert float(whole.sum()) == pytest.approx(float(x["fn"].log_prob(x["value"])), rel=1e-5)
    result = lm.evaluate_documents("test", progress=False)
    assert result["nll"] == pytest.approx(result["nll_sentence"] * result["sentences"] / result["documents"])
    assert len(result["by_position"]) == 3 and "elbo" not in result


def test_a_sentence_vae_on_a_document_store_scores_each_sentence_alone(corpus, tmp_path):
    run = str(tmp_path / "vae")
    train(tiny_config(corpus, documents="blank", max_steps=10), run, log=quiet, progress=False)
    vae = load(run)
    torch.manual_seed(0)
    docs = vae.evaluate_documents("test", samples=20, progress=False)
    torch.manual_seed(0)
    sentences = vae.evaluate("test", 20, progress=False)["totals"]
    assert docs["sentences"] == sentences["sentences"]
    assert docs["nll_sentence"] == pytest.approx(sentences["nll"], abs=0.3)  # two IW estimates of the same


def test_cloze_picks_the_ending_of_the_more_probable_story(tmp_path):
    items = [([[4], [5]], [6], [6, 7], 1), ([[4]], [5, 6, 7], [5], 2), ([[4], [4]], [8], [9, 9], 2)]
    # a hand-made score: a story's log p is minus its number of tokens, so the shorter ending wins
    score = lambda b: -b.sentences.lengths.float().new_zeros(b.size).index_add(  # noqa: E731
        0, b.slots // b.steps, b.sentences.lengths.float())
    accuracy, choices, log_p = cloze_accuracy(score, items, batch_size=2)
    assert choices == [1, 2, 1] and accuracy == pytest.approx(2 / 3)
    assert log_p.tolist() == [[-6.0, -7.0], [-6.0, -4.0], [-6.0, -7.0]]  # tokens with </s>


def test_a_cloze_file_is_read_and_checked(tmp_path, chain_run, run_cli):
    path = tmp_path / "cloze.tsv"
    header = "id\ts1\ts2\ts3\ts4\tending1\tending2\tanswer\n"
    path.write_text(header + "x\ttom went to the shop .\ttom bought milk .\tthen tom went home .\tann went "
                    "to the lake .\tann swam far .\ttom read a book .\t1\n")
    assert read_cloze(str(path))[0][3] == 1
    code, out, err = run_cli("cloze", chain_run, str(path), "--json", "--iw-samples", "10", "--quiet")
    result = json.loads(out)
    assert code == 0, err
    log_p = result["log_p"][0]
    assert result["choices"] == [1 if log_p[0] > log_p[1] else 2] and result["accuracy"] in (0.0, 1.0)
    (tmp_path / "bad.tsv").write_text("a\tb\n")
    code, _, err = run_cli("cloze", chain_run, str(tmp_path / "bad.tsv"))
    assert code == 1 and err.strip().startswith("error:") and "not a Story Cloze file" in err
    with pytest.raises(SVAEError, match="answer 1 or 2"):
        (tmp_path / "bad2.tsv").write_text(header + "x\ta\tb\tc\td\te\tf\t3\n")
        read_cloze(str(tmp_path / "bad2.tsv"))


def test_chain_options_are_checked(corpus, tmp_path, run_cli):
    code, _, err = run_cli("train", "--data", str(corpus), "--prior", "chain", "--guide", "doc-meanfield",
                           "--out", str(tmp_path / "r"))
    assert code == 1 and "--documents blank" in err
    code, _, err = run_cli("train", "--data", str(corpus), "--documents", "blank", "--guide", "doc-conjugate",
                           "--out", str(tmp_path / "r"))
    assert code == 1 and "add --prior chain" in err
    code, _, err = run_cli("sample", str(tmp_path), "--sentences", "3")
    assert code == 1


def test_compare_guides_scores_the_three_document_guides(corpus, tmp_path, run_cli):
    out = tmp_path / "compare"
    code, stdout, err = run_cli("compare-guides", "--data", str(corpus), "--documents", "blank", "--prior", "chain",
                                "--max-steps", "6", "--eval-every", "6", "--emb-dim", "16", "--hidden", "16",
                                "--z-dim", "3", "--batch-size", "8", "--iw-samples", "3", "--out", str(out), "--quiet")
    assert code == 0, err
    rows = [line for line in stdout.splitlines() if line.startswith("| doc-")]
    assert [r.split("|")[1].strip() for r in rows] == ["doc-meanfield", "doc-structured", "doc-conjugate"]
    gaps = [float(r.split("|")[6]) for r in rows]
    assert sum(gaps) > 0  # refining q per document raises its ELBO (per guide, up to the draws' noise)


def test_an_exported_chain_run_samples_the_same_documents(chain_run, tmp_path, run_cli):
    folder = str(tmp_path / "model")
    assert run_cli("export", chain_run, folder)[0] == 0
    rows = [json.loads(run_cli("sample", run, "-n", "2", "--sentences", "3", "--json", "--seed", "4")[1])
            for run in (chain_run, folder)]
    assert rows[0] == rows[1] and len(rows[0]) == 6
