import math

import pytest
import torch
from pyro import poutine

from pyro_svae import load
from pyro_svae.corpus import EncodedSplit, make_batch
from pyro_svae.evaluation import active_units, evaluate, iw_log_likelihood, mutual_information
from pyro_svae.model import ModelConfig, SentenceVAE


def one_d_model():
    """A tiny VAE with a 1-D latent whose decoder depends strongly on z."""
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=8, emb_dim=4, hidden=6, z_dim=1)).eval()
    with torch.no_grad():
        svae.decoder.init.weight.mul_(4.0)
    return svae


@torch.inference_mode()
def test_iw_nll_matches_numerical_integration():
    svae = one_d_model()
    batch = make_batch([[4, 5, 6], [7]])
    torch.manual_seed(1)
    log_px, _, _ = iw_log_likelihood(svae, batch, samples=20000, chunk=5000)
    grid = torch.linspace(-9, 9, 6001)
    dz = float(grid[1] - grid[0])
    for i in range(batch.size):
        one = make_batch([batch.targets[i, : batch.lengths[i] - 1].tolist()]).repeat(len(grid))
        z = grid.unsqueeze(1)
        trace = poutine.trace(poutine.condition(svae.model, data={"z": z})).get_trace(one)
        joint = trace.nodes["x"]["fn"].log_prob(one.targets) + trace.nodes["z"]["fn"].log_prob(z)
        exact = torch.logsumexp(joint, 0) + math.log(dz)
        assert float(log_px[i]) == pytest.approx(float(exact), abs=0.02)


def test_iw_nll_is_below_the_negative_elbo_for_every_sentence(trained_run):
    from pyro_svae.evaluation import validate

    vae = load(trained_run, device="cpu")
    split = vae.split("valid")
    result = vae.evaluate(split, samples=200, progress=False)
    for row in result["sentences"]:
        assert row["nll"] <= -row["elbo"] + 1e-5
        assert row["elbo"] == pytest.approx(-row["rec"] - row["kl"], abs=1e-4)
    totals = result["totals"]
    assert totals["nll"] < -totals["elbo"] - 0.01 and totals["ppl_iw"] < totals["ppl_elbo"]
    # the K-draw ELBO agrees with the training-time validation (analytic KL, one draw) within noise
    check = validate(vae.svae, split)
    assert totals["elbo"] == pytest.approx(check["elbo"], abs=0.15)
    assert totals["kl"] == pytest.approx(totals["kl_analytic"], abs=0.05)
    lines = open(trained_run.replace("run", "corpus/valid.txt")).read().splitlines()
    assert totals["tokens"] == sum(len(s.split()) + 1 for s in lines)  # </s> counted, <s> not


def test_active_units_with_known_variances():
    torch.manual_seed(0)
    n = 20000
    means = torch.stack([torch.randn(n) * 1.0, torch.randn(n) * 0.15, torch.randn(n) * 0.05, torch.zeros(n)], 1)
    count, variances = active_units(means)  # variances 1, 0.0225, 0.0025, 0
    assert count == 2
    assert variances.tolist() == pytest.approx([1.0, 0.0225, 0.0025, 0.0], rel=0.05, abs=1e-6)


def test_mutual_information_is_zero_when_the_encoder_ignores_its_input():
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=4, hidden=6, z_dim=3)).eval()
    with torch.no_grad():
        svae.posterior.loc.weight.zero_()
        svae.posterior.scale.weight.zero_()
    split = EncodedSplit.from_lists([[4 + i % 7, 5, 6 + i % 3] for i in range(60)])
    result = evaluate(svae, split, samples=5, batch_size=16, progress=False)
    assert abs(result["totals"]["mutual_information"]) < 1e-5
    assert result["totals"]["active_units"] == 0


def test_mutual_information_is_positive_and_bounded_for_a_trained_model(trained_run):
    vae = load(trained_run, device="cpu")
    totals = vae.evaluate(vae.split("valid"), samples=10, progress=False)["totals"]
    # MI is at most the KL (its upper bound) and at most log N
    assert 0.05 < totals["mutual_information"] <= min(totals["kl"], math.log(totals["sentences"])) + 1e-3


def test_mutual_information_of_known_gaussians():
    # q(z|x_j) = N(m_j, s^2) with m_j = +-1: the estimator approaches the exact value from below
    import pyro.distributions as dist

    m = torch.tensor([-1.0, 1.0]).repeat(2000).unsqueeze(1)
    q = dist.Normal(m, 0.1).to_event(1)
    torch.manual_seed(0)
    mi = mutual_information([q], [q.sample()])
    assert mi == pytest.approx(math.log(2), abs=0.01)  # two well-separated codes: one bit


def test_language_model_nll_is_exact(corpus, tmp_path):
    from pyro_svae.training import train

    from conftest import quiet, tiny_config

    train(tiny_config(corpus, model="lm", max_steps=5), str(tmp_path / "lm"), log=quiet, progress=False)
    lm = load(str(tmp_path / "lm"), device="cpu")
    split = lm.split("test")
    totals = lm.evaluate(split, samples=7, progress=False)["totals"]
    batch = make_batch([split.sentence(i) for i in range(len(split))])
    with torch.no_grad():
        logits, _ = lm.svae.decoder(batch.inputs, None)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.targets, ignore_index=0, reduction="sum")
    assert totals["nll"] * totals["sentences"] == pytest.approx(float(nll), rel=1e-5)
    assert totals["ppl_iw"] == pytest.approx(math.exp(float(nll) / totals["tokens"]), rel=1e-5)
    assert totals["kl"] == 0 and "mutual_information" not in totals


def test_refinement_raises_the_elbo_and_leaves_the_model_alone(trained_run):
    from pyro_svae.refine import refine

    vae = load(trained_run, device="cpu")
    before = {k: v.clone() for k, v in vae.svae.state_dict().items()}
    result = refine(vae.svae, vae.split("valid"), steps=10, progress=False)
    assert result["elbo_after"] > result["elbo_before"] + 0.1  # an amortization gap exists
    assert result["gain"] == pytest.approx(result["elbo_after"] - result["elbo_before"])
    assert all(torch.equal(before[k], v) for k, v in vae.svae.state_dict().items())
    assert all(p.requires_grad for p in vae.svae.parameters())


def test_bf16_evaluation_keeps_the_latent_densities_in_float32(trained_run):
    vae = load(trained_run, device="cpu")
    split = vae.split("valid", limit=40)
    full = vae.evaluate(split, samples=20, progress=False)
    half = vae.evaluate(split, samples=20, progress=False, amp="bf16")
    assert half["totals"]["amp"] == "bf16"
    # the same draws from the same float32 guide: the KL terms agree to float32 rounding ...
    for a, b in zip(full["sentences"], half["sentences"]):
        assert b["kl"] == pytest.approx(a["kl"], abs=1e-4)
    # ... and only the decoder's bf16 products move the likelihood, by a little
    assert half["totals"]["nll"] == pytest.approx(full["totals"]["nll"], abs=0.1)
    assert half["totals"]["nll"] != full["totals"]["nll"]
