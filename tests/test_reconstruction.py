"""Reconstruction metrics against hand-computed values, and where a user sees them."""

import csv
import json
import math
import os

import pytest

from pyro_svae.evaluation.reconstruction import (content_kept, content_words, corpus_bleu, scores, sentence_bleu,
                                                 token_accuracy)


def test_corpus_bleu_equals_the_hand_computed_geometric_mean():
    # one pair: 4 of 5 unigrams, 3 of 4 bigrams, 2 of 3 trigrams, 1 of 2 4-grams; same length (BP = 1)
    assert corpus_bleu(["a b c d e"], ["a b c d f"]) == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    # two pairs: the n-gram counts add up before the mean; hypothesis 9 tokens vs reference 10: BP = e^(1 - 10/9)
    refs, hyps = ["a b c d e", "v w x y z"], ["a b c d f", "v w x y"]
    p = [(4 + 4) / (5 + 4), (3 + 3) / (4 + 3), (2 + 2) / (3 + 2), (1 + 1) / (2 + 1)]
    expected = math.exp(1 - 10 / 9) * math.prod(p) ** 0.25
    assert corpus_bleu(refs, hyps) == pytest.approx(expected)
    assert corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(1.0)
    assert corpus_bleu(["a b c d"], ["e f g h"]) == 0.0


def test_sentence_bleu_of_a_short_sentence_uses_the_orders_it_has():
    # "a b" against "a b c": p1 = p2 = 1, no 3- or 4-grams (effective order 2); BP = e^(1 - 3/2)
    assert sentence_bleu("a b c", "a b") == pytest.approx(math.exp(1 - 3 / 2))


def test_content_words_kept_and_token_accuracy_by_hand():
    sentence = "the company said it would n't comment on the report"
    assert content_words(sentence) == ["company", "comment", "report"]
    assert content_kept(sentence, "the company said it will be able to the <unk>") == pytest.approx(1 / 3)
    assert content_kept(sentence, "a report on the company 's comment") == 1.0
    assert content_kept("the <unk> said N", "anything") is None  # no content word
    assert content_words("he paid $ N million to <unk> inc.") == ["paid", "million", "inc."]
    assert token_accuracy("a b c d", "a x c") == pytest.approx(2 / 4)
    assert token_accuracy("a b", "a b c d e") == pytest.approx(2 / 5)


def test_scores_by_sentence_and_length_bucket():
    refs = ["the cat sat down", "a dog ran far away from the big old house today ."]
    hyps = ["the cat sat down", "a dog ran"]
    totals, rows = scores(refs, hyps)
    assert [r["exact"] for r in rows] == [True, False] and totals["exact"] == 0.5
    # dog, ran of dog ran far away big old house today
    assert rows[1]["content_kept"] == pytest.approx(2 / 8) and totals["content_kept"] == pytest.approx((1 + 2 / 8) / 2)
    assert set(totals["by_length"]) == {"1-10", "11-20"}
    assert totals["by_length"]["1-10"]["bleu"] == pytest.approx(1.0) and totals["by_length"]["1-10"]["sentences"] == 1


def test_validation_writes_a_reconstruction_bleu_column(corpus, tmp_path):
    from pyro_svae import train

    from conftest import quiet, tiny_config

    train(tiny_config(corpus, max_steps=20, eval_every=10), str(tmp_path / "run"), log=quiet, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == 2 and all(0.0 <= float(r["val_bleu"]) <= 1.0 for r in rows)


def test_the_validation_sample_holds_the_first_sentences_of_the_lengths_trained_on():
    from pyro_svae.evaluation.reconstruction import validation_sample

    class Split:
        lengths = [20, 3, 16, 15, 2, 40, 5]

        def __len__(self):
            return len(self.lengths)

        def sentence(self, i):
            return list(range(self.lengths[i]))

    assert [len(s) for s in validation_sample(Split(), 3, max_len=15)] == [3, 15, 2]
    assert [len(s) for s in validation_sample(Split(), 10, max_len=15)] == [3, 15, 2, 5]
    assert [len(s) for s in validation_sample(Split(), 2)] == [20, 3]
    assert [len(s) for s in validation_sample(Split(), 2, max_len=1)] == [20, 3]  # none that short: the first n


def test_evaluate_reports_reconstruction_overall_per_sentence_and_in_json(trained_run, run_cli, tmp_path):
    from pyro_svae import load

    vae = load(trained_run, device="cpu")
    result = vae.reconstruction("valid", limit=10)
    split = vae.split("valid", limit=10)
    refs = [vae.tokenizer.decode(split.sentence(i)) for i in range(len(split))]
    _, texts = vae.reconstruct(refs)
    assert [r["reconstruction"] for r in result["sentences"]] == texts  # the greedy posterior-mean decodes
    assert result["totals"]["bleu"] == pytest.approx(corpus_bleu(refs, texts))
    out = tmp_path / "rows.jsonl"
    code, stdout, err = run_cli("evaluate", trained_run, "--split", "valid", "--limit", "10", "--iw-samples", "2",
                                "--json", "--quiet", "--per-sentence", str(out))
    assert code == 0, err
    totals = json.loads(stdout)
    assert totals["reconstruction"]["bleu"] == pytest.approx(result["totals"]["bleu"])
    rows = [json.loads(line) for line in open(out)]
    assert [r["reconstruction"] for r in rows] == texts and all("bleu" in r for r in rows)
    code, stdout, _ = run_cli("evaluate", trained_run, "--split", "valid", "--limit", "10", "--iw-samples", "2",
                              "--quiet")
    assert code == 0 and "reconstruction (greedy): BLEU" in stdout


def test_evaluate_rerank_scores_the_reranked_beam_and_refuses_greedy_before_scoring(trained_run, run_cli):
    from pyro_svae import load

    vae = load(trained_run, device="cpu")
    split = vae.split("valid", limit=10)
    refs = [vae.tokenizer.decode(split.sentence(i)) for i in range(len(split))]
    _, texts = vae.reconstruct(refs, strategy="beam", beam=3, rerank=True)
    code, stdout, err = run_cli("evaluate", trained_run, "--split", "valid", "--limit", "10", "--iw-samples", "2",
                                "--json", "--quiet", "--decode", "beam", "--beam", "3", "--rerank")
    assert code == 0, err
    rec = json.loads(stdout)["reconstruction"]
    assert rec["decode"] == "beam, reranked" and rec["bleu"] == pytest.approx(corpus_bleu(refs, texts))
    code, stdout, err = run_cli("evaluate", trained_run, "--split", "valid", "--rerank")
    assert code != 0 and stdout == "" and "goes with --decode beam, not greedy" in err


def test_evaluate_max_words_scores_the_first_sentences_of_at_most_that_many_words(trained_run, run_cli):
    from pyro_svae import load

    vae = load(trained_run, device="cpu")
    whole = vae.split("valid")
    texts = [vae.tokenizer.decode(whole.sentence(i)) for i in range(len(whole))]
    lengths = sorted(len(t.split()) for t in texts)
    n = lengths[len(lengths) // 2]
    expected = [t for t in texts if len(t.split()) <= n][:5]
    assert len(expected) == 5 and lengths[-1] > n > lengths[0] > 1  # the filter has work to do
    split = vae.split("valid", limit=5, max_words=n)
    assert [vae.tokenizer.decode(split.sentence(i)) for i in range(len(split))] == expected
    code, stdout, err = run_cli("evaluate", trained_run, "--split", "valid", "--limit", "5", "--max-words", str(n),
                                "--iw-samples", "2", "--json", "--quiet")
    assert code == 0, err
    rec = vae.reconstruction("valid", limit=5, max_words=n)["totals"]
    same = vae.reconstruction(split)["totals"]
    assert (rec["bleu"], rec["content_kept"], rec["sentences"]) == (same["bleu"], same["content_kept"], 5)
    assert json.loads(stdout)["reconstruction"]["sentences"] == 5
    assert json.loads(stdout)["reconstruction"]["content_kept"] == pytest.approx(rec["content_kept"])
    code, _, err = run_cli("evaluate", trained_run, "--split", "valid", "--max-words", str(lengths[0] - 1), "--quiet")
    assert code != 0 and f"no sentence of at most {lengths[0] - 1} words" in err and len(err.strip().splitlines()) == 1


def test_the_explorer_posterior_carries_the_reconstruction_bleu(trained_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pyro_svae.app.explorer import create_app

    client = TestClient(create_app(trained_run, map_size=20, device="cpu"))
    sentence = "the dog ran under the tree ."
    body = client.post("/api/posterior", json={"sentence": sentence, "n": 2}).json()
    assert body["bleu"] == pytest.approx(sentence_bleu(sentence, body["reconstruction"]["text"]))
    assert os.path.isfile(os.path.join(trained_run, "metrics.csv"))


@pytest.mark.parametrize("select", ["elbo", "bleu"])
def test_select_picks_best_checkpoint_and_patience_by_that_score(corpus, tmp_path, monkeypatch, select):
    import csv

    import torch

    from pyro_svae import train
    from pyro_svae.training import family

    from conftest import quiet, tiny_config

    scores = iter([0.1, 0.5, 0.2, 0.3, 0.4, 0.05])  # best at the 2nd validation, then 4 worse ones
    monkeypatch.setattr(family, "validation_bleu", lambda *a: next(scores))
    scans, scan = [], family.validation_sample
    monkeypatch.setattr(family, "validation_sample", lambda *a: scans.append(a) or scan(*a))
    out = tmp_path / "run"
    summary = train(tiny_config(corpus, max_steps=60, eval_every=10, lr=3e-3, patience=3, select=select), str(out),
                    log=quiet, progress=False)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    best = torch.load(out / "best.pt", weights_only=True)["position"]["step"]
    column = "val_bleu" if select == "bleu" else "val_elbo"
    values = [float(r[column]) for r in rows]
    assert best == int(rows[values.index(max(values))]["step"])
    assert len(rows) >= 5 and len(scans) == 1  # the validation sample is chosen once per run
    if select == "bleu":  # three validations after the best one, none better: patience stops the run
        assert best == 20 and summary["step"] == 50 and summary["stopped"] == "early stopping"


def test_select_floored_picks_best_by_the_bound_with_the_kl_counted_as_training_counts_it(corpus, tmp_path):
    import csv

    import torch

    from pyro_svae import train

    from conftest import quiet, tiny_config

    out = tmp_path / "run"  # a floor of 5 nats on each of 4 dimensions: above what any dimension holds
    train(tiny_config(corpus, max_steps=80, eval_every=10, lr=3e-3, free_bits=5.0, select="floored",
                      kl_schedule="constant"), str(out), log=quiet, progress=False)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    column = lambda name: [float(r[name]) for r in rows]  # noqa: E731
    assert all(kl < 20.0 for kl in column("val_kl"))
    # below the floor the KL counts as the floor: the score is -reconstruction - 20, whatever the KL
    assert column("val_floored") == pytest.approx([-rec - 20.0 for rec in column("val_rec")], abs=2e-4)
    floored, elbo = column("val_floored"), column("val_elbo")
    best = torch.load(out / "best.pt", weights_only=True)["position"]["step"]
    assert best == int(rows[floored.index(max(floored))]["step"]) != int(rows[elbo.index(max(elbo))]["step"])
