"""The guide registry: every family trains and evaluates, and the richer ones earn their keep on
models whose exact posterior is known."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_svae import load, train
from pyro_svae.models.guides import make_guide
from pyro_svae.models.vae import HierarchicalPrior

from conftest import quiet, tiny_config

GUIDES = [("diag", "standard"), ("lowrank:2", "standard"), ("fullrank", "standard"), ("iaf:2", "standard"),
          ("delta", "standard"), ("hier-meanfield", "hier"), ("hier-structured", "hier")]


@pytest.mark.parametrize("guide,prior", GUIDES)
def test_every_guide_trains_evaluates_and_decodes(corpus, tmp_path, guide, prior):
    run = str(tmp_path / "run")
    summary = train(tiny_config(corpus, guide=guide, prior=prior, max_steps=8, eval_every=4), run,
                    log=quiet, progress=False)
    assert all(math.isfinite(loss) for loss in summary["losses"])
    vae = load(run, device="cpu")
    totals = vae.evaluate("test", samples=4, progress=False)["totals"]
    assert math.isfinite(totals["elbo"]) and totals["active_units"] >= 0
    assert math.isnan(totals["nll"]) if guide == "delta" else totals["nll"] <= -totals["elbo"] + 1e-4
    z, texts = vae.posterior(["the cat sat ."], n=3)
    assert z.shape == (3, 4) and len(texts) == 3
    assert len(vae.homotopy("the cat sat .", "he ran .", steps=3)[1]) == 3
    assert len(vae.sample(2)[1]) == 2


@pytest.mark.parametrize("guide,prior", [g for g in GUIDES if g[0] != "delta"])  # a point estimate has no KL
def test_the_kl_floor_keeps_every_family_informative(corpus, tmp_path, guide, prior):
    """With beta = 1 from the start and word dropout off, the plain ELBO lets q(z|x) sink to the
    prior; free bits (the default: per dimension for diag, on the total KL otherwise) hold the KL
    up near the floor."""
    from pyro_svae.data.corpus import make_batch
    from pyro_svae.inference.objectives import kl_floor

    kl = {}
    for free_bits in (0.0, 1.0):
        run = str(tmp_path / f"{guide}-{free_bits}")
        train(tiny_config(corpus, guide=guide, prior=prior, free_bits=free_bits, kl_schedule="constant",
                          max_steps=60, eval_every=60, lr=3e-3), run, log=quiet, progress=False)
        vae = load(run, device="cpu", which="last")
        split = vae.split("valid")
        batch = make_batch([split.sentence(i) for i in range(32)])
        with torch.no_grad():
            guide_tr = poutine.trace(vae.svae.guide).get_trace(batch)
            model_tr = poutine.trace(poutine.replay(vae.svae.model, trace=guide_tr)).get_trace(batch)
            kl[free_bits] = float(kl_floor(guide_tr, model_tr, 0.0)[0])
    assert kl[1.0] > kl[0.0] + 0.5, kl


def test_unknown_guide_lists_the_valid_ones(corpus, tmp_path, run_cli):
    code, _, err = run_cli("train", "--data", str(corpus), "--out", str(tmp_path / "r"), "--guide", "vampprior")
    assert code == 1 and err.strip().count("\n") == 0
    assert "unknown guide 'vampprior'; valid guides: diag, lowrank, fullrank, iaf, delta" in err
    code, _, err = run_cli("train", "--data", str(corpus), "--out", str(tmp_path / "r"), "--guide", "hier-structured")
    assert code == 1 and "goes with --prior hier" in err
    assert not (tmp_path / "r").exists()  # checked before anything is read or written


def fit(model, guide_fn, head, data, steps, lr=0.02):
    pyro.clear_param_store()
    svi = SVI(model, guide_fn, Adam({"lr": lr}), Trace_ELBO())
    for _ in range(steps):
        svi.step(data)
    with torch.no_grad():  # a precise final ELBO: many particles
        return -Trace_ELBO(num_particles=400, vectorize_particles=False).loss(model, guide_fn, data) / len(data)


def linear_gaussian():
    """x = W z + noise with nearly collinear columns: the exact posterior is a correlated Gaussian."""
    W = torch.tensor([[1.0, 0.9], [0.8, 1.0], [0.9, 0.7]])
    sigma = 0.4
    torch.manual_seed(0)
    data = (torch.randn(64, 2) @ W.T + sigma * torch.randn(64, 3))

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T, sigma).to_event(1), obs=x)

    cov = W @ W.T + sigma**2 * torch.eye(3)
    exact = dist.MultivariateNormal(torch.zeros(3), cov).log_prob(data).mean()
    return model, data, float(exact)


def amortized(head):
    def guide(x):
        pyro.module("head", head)
        with pyro.plate("data", len(x)):
            head.sample(x)  # the encoder's summary is x itself

    return guide


def test_fullrank_and_iaf_beat_diag_on_a_correlated_posterior():
    model, data, exact = linear_gaussian()
    elbo = {}
    for spec in ("diag", "fullrank", "iaf:2"):
        torch.manual_seed(1)
        head = make_guide(spec, in_dim=3, z_dim=2)
        elbo[spec] = fit(model, amortized(head), head, data, steps=1200, lr=0.03)
    assert elbo["fullrank"] > elbo["diag"] + 0.05
    assert elbo["iaf:2"] > elbo["diag"] + 0.05
    assert elbo["fullrank"] == pytest.approx(exact, abs=0.03)  # the family holds the true posterior
    assert elbo["diag"] < exact - 0.05


def test_structured_hierarchical_guide_beats_mean_field():
    prior = HierarchicalPrior(z_dim=2)
    with torch.no_grad():  # p(z2 | z1) = N(2 z1, 0.2^2): z1 and z2 strongly coupled
        prior.cond.weight.copy_(torch.tensor([[2.0], [0.0]]))
        prior.cond.bias.copy_(torch.tensor([0.0, math.log(math.expm1(0.2 - 1e-3))]))
    torch.manual_seed(0)
    data = torch.randn(64, 1) * 2.0

    def model(x):
        with pyro.plate("data", len(x)):
            z = prior.sample(len(x), "cpu")
            pyro.sample("x", dist.Normal(z[:, :1] + z[:, 1:], 0.5).to_event(1), obs=x)

    elbo = {}
    for spec in ("hier-meanfield", "hier-structured"):
        torch.manual_seed(1)
        head = make_guide(spec, in_dim=1, z_dim=2)
        elbo[spec] = fit(model, amortized(head), head, data, steps=1200, lr=0.03)
    assert elbo["hier-structured"] > elbo["hier-meanfield"] + 0.1


def test_score_function_gradient_is_unbiased_but_noisier():
    from pyro_svae.inference.gradients import gradient_samples, summarize

    x = torch.tensor([1.5, -0.5, 0.3])

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(3))
        scale = pyro.param("scale", torch.ones(3) * 0.8, constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))

    pyro.clear_param_store()
    torch.manual_seed(0)
    guide(x)
    params = {"loc": [pyro.param("loc").unconstrained()]}
    path = gradient_samples(model, guide, params, "reparam", 3000, x)["loc"]
    score = gradient_samples(model, guide, params, "reinforce", 3000, x)["loc"]
    # both estimate the same gradient: here d(-ELBO)/d loc = 2 loc - x = -x exactly
    stderr = score.std(0) / math.sqrt(len(score))
    assert torch.all((score.mean(0) - path.mean(0)).abs() < 4 * stderr)
    # pathwise draws: 2 (loc + 0.8 eps) - x, variance 4 * 0.8^2 = 2.56: 4 standard errors
    assert torch.allclose(path.mean(0), -x, atol=4 * 1.6 / math.sqrt(3000))
    assert summarize(score)["variance"] > 2 * summarize(path)["variance"]  # measured: 3.3x


def test_compare_guides_writes_table_and_plot(corpus, tmp_path, run_cli):
    out = tmp_path / "cmp"
    code, stdout, err = run_cli("compare-guides", "--data", str(corpus), "--guides", "diag,fullrank,delta",
                                "--budget", "1", "--max-steps", "6", "--eval-every", "3", "--out", str(out),
                                "--iw-samples", "4", "--quiet", "--emb-dim", "16", "--hidden", "24", "--z-dim", "4")
    assert code == 0, err
    table = (out / "results.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| guide")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["diag", "fullrank", "delta"]
    assert rows[2].split(" | ")[2] == "n/a"  # a point estimate has no IW-NLL
    assert all(r.split(" | ")[7] == "6" for r in rows)  # same budget: 6 steps each
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_new_family_is_one_class_and_one_registry_line(corpus, tmp_path, monkeypatch):
    import torch.nn as nn
    import torch.nn.functional as F

    from pyro_svae.models import guides

    class StudentT(guides.SingleSite):  # the README's example
        def __init__(self, in_dim, z_dim, arg=None):
            super().__init__()
            self.nu = float(arg or 4)
            self.loc, self.scale = nn.Linear(in_dim, z_dim), nn.Linear(in_dim, z_dim)

        def forward(self, h):
            return dist.StudentT(self.nu, self.loc(h), F.softplus(self.scale(h)) + 1e-5).to_event(1)

    monkeypatch.setitem(guides.GUIDES, "studentt", StudentT)
    for elbo in ("trace", "meanfield"):  # meanfield falls back to a sampled KL: none is registered
        run = str(tmp_path / elbo)
        summary = train(tiny_config(corpus, guide="studentt:3", elbo=elbo, max_steps=4), run, log=quiet, progress=False)
        assert all(math.isfinite(loss) for loss in summary["losses"])
        assert load(run, device="cpu").svae.posterior.nu == 3.0
