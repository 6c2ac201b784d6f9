import random

import pytest
import torch

from pyro_svae import load, train
from pyro_svae.evaluation.adversarial import adversarial_errors
from pyro_svae.evaluation.imputation import complete, icm, impute, split_ending
from pyro_svae.data.tokenizers import BOS, EOS, PAD

from conftest import quiet, tiny_config


def test_split_ending_removes_a_fifth_and_at_least_one_word():
    assert split_ending(list(range(10))) == (list(range(8)), [8, 9])
    assert split_ending([7, 8, 9]) == ([7, 8], [9])
    assert split_ending([7]) == ([], [7])


@pytest.fixture(scope="module")
def vae(trained_run):
    return load(trained_run, device="cpu")


def prefixes_of(vae, length, count=12):
    split = vae.split("valid")
    rows = [split.sentence(i)[:length] for i in range(len(split)) if len(split.sentence(i)) > length][:count]
    return torch.tensor(rows)


def log_joint_by_hand(vae, prefixes, endings, z):
    """log N(z; 0, I) + sum_t log softmax(decoder(<s> x_<t, z))[x_t] over the words and </s>, [B]."""
    words = torch.cat([prefixes, endings], dim=1)
    inputs = torch.cat([torch.full((len(words), 1), BOS), words], dim=1)
    targets = torch.cat([words, torch.full((len(words), 1), EOS)], dim=1)
    with torch.no_grad():
        logits, _ = vae.svae.decoder(inputs, z)
    log_x = torch.log_softmax(logits.double(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(1)
    return log_x + torch.distributions.Normal(0.0, 1.0).log_prob(z.double()).sum(1)


def test_icm_scores_are_the_joint_log_probability_and_climb(vae):
    prefixes = prefixes_of(vae, 3)
    endings, z, history = icm(vae.svae, prefixes, m=2, beam=4, iterations=3)
    assert endings.shape == (12, 2) and history.shape == (4, 12)
    # the score ICM reports for its answer is log p(x, z) of that answer, computed another way
    assert torch.allclose(history[-1].double(), log_joint_by_hand(vae, prefixes, endings, z), atol=1e-3)
    assert (history[-1] > history[0]).any()  # and it does climb
    assert not ((endings == EOS) | (endings == PAD) | (endings == BOS)).any()  # exactly m words


def test_completion_continues_the_forced_prefix(vae):
    prefixes = prefixes_of(vae, 4)
    z = torch.randn(len(prefixes), vae.z_dim)
    with torch.no_grad():
        first = complete(vae.svae.decoder, z, prefixes, m=1, beam=1)[:, 0]
        inputs = torch.cat([torch.full((len(prefixes), 1), BOS), prefixes], dim=1)
        logits, _ = vae.svae.decoder(inputs, z)
        logits = logits[:, -1]
        logits[:, [PAD, BOS, EOS]] = -float("inf")
    assert torch.equal(first, logits.argmax(-1))


def test_a_one_word_sentence_gets_one_imputed_word(vae):
    word = vae.tokenizer.encode("cat")
    rows = impute([word, word + word], vae=vae.svae, lm=vae.svae, beam=3, iterations=1, progress=False)
    assert rows[0]["prefix"] == [] and len(rows[0]["vae"]) == 1 and len(rows[0]["lm"]) == 1
    assert rows[1]["prefix"] == word and len(rows[1]["vae"]) == 1


def test_classifiers_on_trivially_different_and_identical_classes():
    rng = random.Random(0)
    real = [[rng.choice([4, 5, 6]) for _ in range(rng.randint(3, 8))] for _ in range(400)]
    different = [[rng.choice([7, 8, 9]) for _ in s] for s in real]
    for name, r in adversarial_errors(real, different, 12).items():
        assert r["accuracy"] > 0.97, name
    for name, r in adversarial_errors(real, [list(s) for s in real], 12).items():
        assert r["accuracy"] == pytest.approx(0.5, abs=0.03) and abs(r["error"]) <= 0.03, name


def test_cli_impute_with_a_language_model_baseline(trained_run, corpus, tmp_path, run_cli):
    lm_run = str(tmp_path / "lm")
    # the LM must share the VAE's vocabulary: train it on the VAE's own corpus
    train(tiny_config(trained_run.replace("run", "corpus"), model="lm", max_steps=20), lm_run, log=quiet, progress=False)
    out = tmp_path / "impute.tsv"
    code, stdout, err = run_cli("impute", trained_run, "--split", "valid", "--beam", "3", "--icm-iters", "1",
                                "--baseline", lm_run, "--limit", "30", "--out", str(out), "--quiet")
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "prefix\ttruth\tvae\tlm" and len(lines) == 31
    assert all(len(line.split("\t")) == 4 and line.split("\t")[3] for line in lines[1:])
    assert "VAE: unigram accuracy" in stdout and "LM: unigram accuracy" in stdout
    other = str(tmp_path / "other")
    train(tiny_config(corpus, model="lm", max_steps=2, min_count=3), other, log=quiet, progress=False)
    code, _, err = run_cli("impute", trained_run, "--baseline", other, "--limit", "5", "--quiet")
    assert code == 1 and "another vocabulary" in err
    code, _, err = run_cli("impute", trained_run, "--baseline", trained_run, "--limit", "5", "--quiet")
    assert code == 1 and "must be a language model" in err
