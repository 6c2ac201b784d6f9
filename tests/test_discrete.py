"""Discrete latents: the mixture prior (enum, concrete, reinforce) and the categorical code."""

import csv
import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

import pyro_svae
from pyro_svae.data.corpus import make_batch
from pyro_svae.models.discrete import OneHotCode, parse_tau
from pyro_svae.errors import SVAEError
from pyro_svae.inference.gradients import component_gradient_samples, summarize
from pyro_svae.models.vae import ModelConfig, SentenceVAE
from pyro_svae.inference.objectives import EnumELBO, kl_floor
from pyro_svae.training.config import check_config
from pyro_svae.training.run import train

from conftest import quiet, tiny_config

SENTENCES = [[5, 6, 7, 8], [9, 10, 11], [5, 9, 12, 13, 14], [6, 6, 7]]


def tiny_vae(**kw):
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=20, emb_dim=8, hidden=8, z_dim=2, prior="mixture:3", **kw))
    with torch.no_grad():  # components apart, unequal weights
        svae.prior.loc.mul_(2)
        svae.prior.logits.copy_(torch.tensor([0.5, -1.0, 0.2]))
    return svae.eval()


@pytest.mark.parametrize("size, beta", [(None, 1.0), (100, 1.0), (100, 0.3)])
def test_enumerated_elbo_equals_the_hand_sum_over_components(size, beta):
    svae, batch = tiny_vae(), make_batch(SENTENCES)
    pyro.set_rng_seed(1)
    elbo = -TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        svae.model, svae.guide, batch, size=size, beta=beta, discrete="enum")
    pyro.set_rng_seed(1)  # the same draw of z
    guide = poutine.trace(svae.guide).get_trace(batch, size=size, beta=beta)
    z, q = guide.nodes["z"]["value"], guide.nodes["z"]["fn"]
    p = svae.prior
    log_normal = torch.distributions.Normal(p.loc, p.scale()).log_prob(z[:, None, :]).sum(-1)  # [B, K]
    log_p = torch.logsumexp(torch.log_softmax(p.logits, -1) + log_normal, -1)  # sum over c by hand
    rec = poutine.trace(poutine.condition(svae.model, data={"z": z})).get_trace(batch).nodes["x"]["fn"].log_prob(batch.targets)
    scale = (size or batch.size) / batch.size
    hand = (scale * (rec + beta * (log_p - q.log_prob(z)))).sum()
    assert float(elbo.detach()) == pytest.approx(float(hand.detach()), rel=1e-5)
    # and the marginal site used for evaluation gives the same log p(z)
    assert torch.allclose(p.marginal(batch.size).log_prob(z), log_p, atol=1e-5)


def test_free_bits_floor_frees_the_encoder_but_not_a_learned_prior():
    svae, batch = tiny_vae(), make_batch(SENTENCES)
    svae.train()
    guide, model = (poutine.trace(f) for f in (svae.guide, svae.model))
    pyro.set_rng_seed(0)
    g = guide.get_trace(batch, discrete="enum")
    m = poutine.trace(poutine.replay(poutine.enum(svae.model, first_available_dim=-2), trace=g)).get_trace(batch, discrete="enum")
    kl, shortfall = kl_floor(g, m, free_bits=100.0)  # far below the floor
    assert float(shortfall.detach()) > 0
    (kl + shortfall).backward()
    assert svae.prior.loc.grad.abs().sum() > 0  # the mixture still fits the posteriors
    assert all(p.grad is None or p.grad.abs().max() < 1e-5 for p in svae.posterior.parameters())  # the encoder is free


def test_free_bits_floor_frees_the_encoder_of_a_hierarchical_prior():
    """p(z2 | z1) reads the guide's z1: below the floor no encoder parameter may feel the KL."""
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=20, emb_dim=8, hidden=8, z_dim=4, prior="hier", guide="hier-meanfield"))
    batch = make_batch(SENTENCES)
    g = poutine.trace(svae.guide).get_trace(batch)
    m = poutine.trace(poutine.replay(svae.model, trace=g)).get_trace(batch)
    kl, shortfall = kl_floor(g, m, free_bits=100.0)
    (kl + shortfall).backward()
    assert all(p.grad is None or p.grad.abs().max() < 1e-5 for p in svae.posterior.parameters())
    assert all(p.grad is None or p.grad.abs().max() < 1e-5 for p in svae.encoder.parameters())


def gradients(svae, estimator, samples, temperature=0.5):
    pyro.set_rng_seed(0)
    return component_gradient_samples(svae, make_batch(SENTENCES[:2]), estimator, samples, temperature)


def test_score_function_gradient_agrees_with_enumeration_and_varies_more():
    svae = tiny_vae(discrete="reinforce")
    exact, scored = gradients(svae, "enum", 150), gradients(svae, "reinforce", 150)
    e, s = summarize(exact), summarize(scored)
    gap = float((exact.mean(0) - scored.mean(0)).norm())
    assert gap < 3 * math.hypot(e["mean_stderr"], s["mean_stderr"])  # same expectation
    assert s["variance"] > 5 * e["variance"]  # the price of scoring c instead of summing it


def test_concrete_bias_shrinks_as_the_temperature_falls():
    svae = tiny_vae(discrete="concrete")
    exact = gradients(svae, "enum", 150).mean(0)
    bias = [float((gradients(svae, "concrete", 300, t).mean(0) - exact).norm()) for t in (3.0, 1.0, 0.3)]
    assert bias[0] > bias[1] > bias[2]


def test_one_hot_code_kl_support_and_straight_through():
    q, p = OneHotCode(torch.randn(3, 2, 4)), OneHotCode(torch.randn(3, 2, 4))
    hand = (q.probs * (q.probs.log() - p.probs.log())).sum((-1, -2))
    assert torch.allclose(torch.distributions.kl_divergence(q, p), hand, atol=1e-6)
    support = q.enumerate_support(expand=False)
    assert support.shape == (16, 1, 8) and torch.allclose(q.log_prob(support).exp().sum(0), torch.ones(3))
    hard = OneHotCode(torch.randn(3, 2, 4, requires_grad=True), temperature=0.5, straight_through=True)
    y = hard.rsample()
    assert set(y.detach().unique().tolist()) == {0.0, 1.0} and y.requires_grad
    soft = OneHotCode(torch.randn(3, 2, 4), temperature=0.5).rsample().view(3, 2, 4)
    assert torch.allclose(soft.sum(-1), torch.ones(3, 2)) and ((soft > 0) & (soft < 1)).all()
    assert parse_tau("1.0,0.5,100")(0) == 1.0 and parse_tau("1.0,0.5,100")(50) == pytest.approx(0.5 ** 0.5)


@pytest.mark.parametrize("estimator", ["concrete", "reinforce"])
def test_categorical_code_trains_and_decodes(corpus, tmp_path, estimator):
    pyro.clear_param_store()
    summary = train(tiny_config(corpus, latent="categorical:3,4", discrete=estimator, max_steps=60, free_bits=0.1,
                                tau="1.0,0.5,20", lr=3e-3, eval_every=20), str(tmp_path / "run"), log=quiet, progress=False)
    assert all(math.isfinite(x) for x in summary["losses"])
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert float(rows[-1]["val_elbo"]) > float(rows[0]["val_elbo"])  # it learns
    vae = pyro_svae.load(str(tmp_path / "run"), device="cpu")
    assert vae.z_dim == 12
    pyro.set_rng_seed(0)
    z, texts = vae.sample(3)
    assert z.shape == (3, 12) and torch.equal(z.view(3, 3, 4).sum(-1), torch.ones(3, 3)) and all(texts)
    mean = vae.posterior_mean(["the cat sat on the mat ."])
    assert torch.allclose(mean.view(3, 4).sum(-1), torch.ones(3))  # q's class probabilities
    totals = vae.evaluate("test", samples=5, progress=False)["totals"]
    assert totals["nll"] <= -totals["elbo"] + 1e-4 and totals["kl_analytic"] <= 3 * math.log(4) + 1e-4


@pytest.mark.parametrize("options, message", [
    (dict(latent="categorical:3,4", discrete="enum"), "K^M = 64"),
    (dict(discrete="reinforce"), "needs a discrete latent"),
    (dict(prior="mixture:1"), "K must lie in"),
    (dict(prior="mixture:x"), "expected mixture:K"),
    (dict(prior="mixture:4", iw_particles=3), "--iw-particles > 1 is for a Gaussian latent"),
    (dict(prior="mixture:4", discrete="concrete", tau="0.5,1.0,10"), "--tau"),
    (dict(latent="categorical:0,4"), "--latent"),
    (dict(latent="categorical:2,4", guide="iaf:2"), "its own q(z|x)"),
    (dict(prior="mixture:4", guide="hier-meanfield"), "goes with --prior hier"),
])
def test_bad_discrete_options_are_one_line_errors(corpus, options, message):
    with pytest.raises(SVAEError, match=message.replace("^", r"\^").replace("(", r"\(").replace(")", r"\)")):
        check_config(tiny_config(corpus, **options))


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    from conftest import write_corpus

    root = tmp_path_factory.mktemp("mixture")
    data = write_corpus(root / "corpus", n_train=300)
    pyro.clear_param_store()
    train(tiny_config(data, prior="mixture:3", max_steps=60, eval_every=30, free_bits=0.5),
          str(root / "run"), log=quiet, progress=False)
    return str(root / "run")


def test_mixture_run_evaluates_clusters_and_samples_a_component(mixture_run, run_cli):
    vae = pyro_svae.load(mixture_run, device="cpu")
    totals = vae.evaluate("test", samples=20, progress=False)["totals"]
    assert 1.0 <= totals["clusters_in_use"] <= 3.0 + 1e-6
    # clusters in use: exp of the entropy of the mean component posterior, recomputed from the posteriors
    test = vae.split("test")
    mean = vae.component_posterior([vae.tokenizer.decode(test.sentence(i)) for i in range(len(test))]).mean(0)
    assert totals["clusters_in_use"] == pytest.approx(math.exp(-(mean * mean.clamp_min(1e-30).log()).sum()), rel=0.02)
    post = vae.component_posterior(["the cat sat on the mat .", "she ran ."])
    assert post.shape == (2, 3) and torch.allclose(post.sum(1), torch.ones(2))
    found = vae.clusters("test", top=3)
    assert sum(c["size"] for c in found) == 40 and [c["size"] for c in found] == sorted((c["size"] for c in found), reverse=True)
    code, out, _ = run_cli("clusters", mixture_run, "--top", "2")
    assert code == 0 and "test: 40 sentences in" in out and "component" in out
    code, out, _ = run_cli("sample", mixture_run, "-n", "2", "--component", "1", "--json")
    assert code == 0 and out.count('"text"') == 2
    code, _, err = run_cli("sample", mixture_run, "--component", "7")
    assert code != 0 and "error: --component 7: the mixture has components 0 to 2" in err
    code, out, _ = run_cli("evaluate", mixture_run, "--iw-samples", "5", "--limit", "10", "--quiet")
    assert code == 0 and "clusters " in out


def test_clusters_of_a_gaussian_run_is_a_one_line_error(trained_run, run_cli):
    code, _, err = run_cli("clusters", trained_run)
    assert code != 0 and err.strip() == "error: this run has no mixture prior (train with --prior mixture:K)"


def test_enum_elbo_trains_a_mixture(corpus, tmp_path):
    pyro.clear_param_store()
    summary = train(tiny_config(corpus, prior="mixture:3", max_steps=150, eval_every=50, lr=3e-3, free_bits=0.5),
                    str(tmp_path / "run"), log=quiet, progress=False)
    # better than the uniform model over the vocabulary, which no untrained decoder beats
    vae = pyro_svae.load(str(tmp_path / "run"), device="cpu")
    valid = vae.split("valid")
    uniform = -math.log(len(vae.tokenizer)) * (float(valid.lengths.float().mean()) + 1)
    assert summary["last"]["val_elbo"] > uniform + 5 and all(math.isfinite(x) for x in summary["losses"])
    assert isinstance(EnumELBO(0.5), TraceEnum_ELBO)


def test_grad_variance_of_the_discrete_site(mixture_run, corpus, tmp_path, run_cli):
    code, _, err = run_cli("grad-variance", mixture_run, "--site", "c", "--samples", "3")
    assert code != 0 and "need q(c|x)" in err  # an enum run has no q(c|x)
    pyro.clear_param_store()
    train(tiny_config(corpus, prior="mixture:3", discrete="reinforce", max_steps=10), str(tmp_path / "run"),
          log=quiet, progress=False)
    code, out, _ = run_cli("grad-variance", str(tmp_path / "run"), "--site", "c", "--samples", "4", "--batch-size", "4",
                           "--quiet", "--json")
    report = json.loads(out)
    assert code == 0 and set(report) == {"enum", "reinforce", "reinforce+baseline", "concrete"}
    assert report["enum"]["bias_norm"] == 0 and all(r["variance"] >= 0 for r in report.values())
