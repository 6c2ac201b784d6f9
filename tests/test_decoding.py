import itertools
import json

import pyro
import pytest
import torch

from pyro_svae import load
from pyro_svae.models.decoding import Beam, Greedy, Sampling
from pyro_svae.models.likelihood import Sentences
from pyro_svae.models.vae import ModelConfig, SentenceVAE
from pyro_svae.data.tokenizers import EOS, PAD
from pyro_svae.app.trained import TrainedVAE


@pytest.fixture(scope="module")
def vae(trained_run):
    return load(trained_run, device="cpu")


def log_prob(vae, z, tokens):
    with torch.inference_mode():
        return Sentences(vae.svae.decoder, z).log_prob(tokens)


def test_beam_of_width_one_is_greedy(vae):
    z = torch.randn(16, vae.z_dim, generator=torch.Generator().manual_seed(0))
    greedy = vae.decode_tokens(z, Greedy())
    beam = vae.decode_tokens(z, Beam(width=1, length_penalty=0.0))
    assert torch.equal(greedy, beam)


def tiny_random_vae(vocab_size=7, seed=0):
    """An untrained tiny model; <pad> and <s> get ~zero probability so that teacher-forced
    log-probabilities equal the scores the searches see."""
    torch.manual_seed(seed)
    svae = SentenceVAE(ModelConfig(vocab_size=vocab_size, emb_dim=4, hidden=6, z_dim=2)).eval()
    with torch.no_grad():
        svae.decoder.out.bias[PAD] = svae.decoder.out.bias[2] = -1e4
    return TrainedVAE(svae, tokenizer=None, config={"train": {"max_len": 20}})


def test_beam_finds_sequences_at_least_as_likely_as_greedy():
    vae = tiny_random_vae(vocab_size=9)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    greedy = log_prob(vae, z, vae.decode_tokens(z, Greedy(), max_len=8))
    beam = log_prob(vae, z, vae.decode_tokens(z, Beam(width=4, length_penalty=0.0), max_len=8))
    assert (beam >= greedy - 1e-5).all()
    assert (beam > greedy + 1e-3).any()  # and it does find better ones


def test_wide_beam_is_exhaustive_search():
    vae = tiny_random_vae(vocab_size=7)  # three words: ids 4, 5, 6
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    L = 4
    candidates = [list(w) + [EOS] + [PAD] * (L - 1 - n)
                  for n in range(L) for w in itertools.product([4, 5, 6], repeat=n)]
    candidates += [list(w) for w in itertools.product([4, 5, 6], repeat=L)]  # cut at max_len
    candidates = torch.tensor(candidates)
    for i in range(len(z)):
        zi = z[i : i + 1].expand(len(candidates), -1)
        best = log_prob(vae, zi, candidates).max()
        found = vae.decode_tokens(z[i : i + 1], Beam(width=128, length_penalty=0.0), max_len=L)
        assert log_prob(vae, z[i : i + 1], found)[0] == pytest.approx(float(best), abs=1e-5)


def test_homotopy_endpoints_are_the_reconstructions(vae):
    a, b = "the cat sat on the mat .", "she sang by the river ."
    z, texts = vae.homotopy(a, b, steps=6)
    zr, recon = vae.reconstruct([a, b])
    assert len(texts) == 6 and texts[0] == recon[0] and texts[-1] == recon[1]
    assert torch.allclose(z[0], zr[0]) and torch.allclose(z[-1], zr[1])


def test_same_seed_same_output(vae):
    def draw(seed):
        pyro.set_rng_seed(seed)
        return vae.sample(6, strategy="sample", temperature=1.2)

    (z1, t1), (z2, t2), (z3, t3) = draw(3), draw(3), draw(4)
    assert torch.equal(z1, z2) and t1 == t2
    assert not torch.equal(z1, z3) and t1 != t3


def test_a_near_autoencoder_reconstructs_its_training_sentences_token_by_token(tmp_path):
    # KL weight ~0 and an inputless decoder: z must carry every word, and 64 sentences fit in it
    from pyro_svae import load, train

    from conftest import quiet, tiny_config, write_corpus

    data = write_corpus(tmp_path / "corpus", n_train=64, n_valid=16, n_test=16)
    pyro.clear_param_store()
    train(tiny_config(data, max_steps=1000, eval_every=500, word_keep=0.0, lr=5e-3, hidden=64, emb_dim=32, z_dim=16,
                      kl_schedule="constant:0.0001", bidirectional=True), str(tmp_path / "run"), log=quiet,
          progress=False)
    ae = load(str(tmp_path / "run"), device="cpu")
    split = ae.split("train")
    ids = [split.sentence(i) for i in range(len(split))]
    _, texts = ae.reconstruct([ae.tokenizer.decode(s) for s in ids])
    exact = sum(ae.tokenizer.encode(t) == s for t, s in zip(texts, ids))
    assert exact >= 0.9 * len(ids), f"{exact} of {len(ids)} reconstructed exactly"


@pytest.mark.parametrize("strategy", [Greedy(), Sampling(1.0, 3), Beam(3)])
def test_a_model_that_never_ends_stops_at_max_len(strategy):
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=10, emb_dim=4, hidden=5, z_dim=2)).eval()
    with torch.no_grad():
        svae.decoder.out.bias[EOS] = -1e4  # </s> is (almost) never chosen
    vae = TrainedVAE(svae, tokenizer=None, config={"train": {"max_len": 20}})
    tokens = vae.decode_tokens(torch.randn(4, 2), strategy, max_len=7)
    assert tokens.shape == (4, 7)
    assert not (tokens == EOS).any() and not (tokens == PAD).any()


def test_cli_commands_print_the_expected_number_of_sentences(trained_run, run_cli):
    code, out, err = run_cli("sample", trained_run, "-n", "4", "--decode", "beam", "--beam", "3")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 4
    code, out, _ = run_cli("reconstruct", trained_run, "the cat sat .", "he ran at home .")
    assert code == 0 and len(out.strip().splitlines()) == 2
    code, out, _ = run_cli("posterior", trained_run, "the cat sat .", "he ran .", "-n", "3", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 6 and all(len(r["z"]) == 4 for r in rows)
    code, out, _ = run_cli("homotopy", trained_run, "the cat sat .", "he ran .", "--steps", "5")
    assert code == 0 and len(out.strip().splitlines()) == 5
    code, out, _ = run_cli("homotopy", trained_run, "--from-prior", "--steps", "3", "--decode", "sample")
    assert code == 0 and len(out.strip().splitlines()) == 3


def test_cli_repeats_with_a_seed(trained_run, run_cli):
    args = ("sample", trained_run, "-n", "5", "--decode", "sample", "--seed", "11", "--json")
    assert run_cli(*args)[1] == run_cli(*args)[1]


def test_unknown_words_warn(trained_run, run_cli):
    code, out, err = run_cli("reconstruct", trained_run, "the zebra sat .")
    assert code == 0 and "zebra" in err and "<unk>" in err


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_no_unk_never_emits_unk_and_otherwise_changes_nothing(strategy):
    from pyro_svae.data.tokenizers import UNK
    from pyro_svae.models.decoding import make_strategy

    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=8, hidden=8, z_dim=3))
    with torch.no_grad():  # <unk> the likeliest word at every step
        svae.decoder.out.bias[UNK] = 50.0
    z = torch.randn(6, 3)
    allowed = make_strategy(strategy, beam=3)(svae.decoder, z, 5, 6)
    banned = make_strategy(strategy, beam=3, unk=False)(svae.decoder, z, 5, 6)
    assert (allowed == UNK).all() and banned.shape == (6, 5)
    assert not (banned == UNK).any() and (banned != PAD).any()


def test_rerank_picks_the_candidate_with_the_best_likelihood_both_ways():
    from pyro_svae.data.corpus import decoded_ids, make_batch
    from pyro_svae.models.decoding import beams

    vae = tiny_random_vae(vocab_size=9, seed=3)
    svae, W, L = vae.svae, 6, 6
    z = torch.randn(40, 2, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        history, _, _ = beams(svae.decoder, z, L, len(z), W)
        chosen = vae.decode_tokens(z, Beam(width=W, rerank=True), max_len=L)
        plain = vae.decode_tokens(z, Beam(width=W), max_len=L)
        changed = 0
        for i in range(len(z)):  # an independent score of each candidate: teacher-forced log p, the guide's log q
            cands = history[i]
            zi = z[i : i + 1].expand(W, -1)
            lengths = (cands != PAD).sum(1).float()
            log_p = log_prob(vae, zi, cands)
            log_q = svae.q(make_batch(decoded_ids(cands))).log_prob(zi)
            assert torch.equal(chosen[i], cands[((log_p + log_q) / lengths).argmax()])
            assert torch.equal(plain[i], cands[(log_p / lengths).argmax()])
            changed += not torch.equal(chosen[i], plain[i])
    assert changed > 0  # q changes some choices


def test_rerank_needs_a_beam_and_a_single_q(trained_run, run_cli, tmp_path):
    from conftest import quiet, tiny_config, write_corpus
    from pyro_svae import train

    code, out, err = run_cli("reconstruct", trained_run, "the cat sat .", "--rerank")
    assert code != 0 and err.strip() == "error: --rerank chooses among a beam's candidates: it goes with --decode beam, not greedy"
    code, out, err = run_cli("reconstruct", trained_run, "the cat sat .", "--rerank", "--decode", "beam", "--beam", "3")
    assert code == 0 and len(out.strip().splitlines()) == 1
    train(tiny_config(write_corpus(tmp_path / "c"), guide="hier-meanfield", prior="hier", max_steps=2),
          str(tmp_path / "hier"), log=quiet, progress=False)
    code, out, err = run_cli("sample", str(tmp_path / "hier"), "--decode", "beam", "--rerank")
    assert code != 0 and err.strip() == "error: --rerank needs a single q(z|x): the hier-meanfield guide has several sites"
