import math

import pytest
import torch
from pyro import poutine

from pyro_svae import load
from pyro_svae.data.corpus import EncodedSplit, make_batch
from pyro_svae.errors import SVAEError
from pyro_svae.evaluation.metrics import active_units, evaluate, iw_log_likelihood, mutual_information
from pyro_svae.models.vae import ModelConfig, SentenceVAE

from conftest import needs_bf16


def one_d_model():
    """A tiny VAE with a 1-D latent whose decoder depends strongly on z."""
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=8, emb_dim=4, hidden=6, z_dim=1)).eval()
    with torch.no_grad():
        svae.decoder.init.weight.mul_(4.0)
    return svae


@torch.no_grad()
def exact_log_px(svae, tokens, lift=lambda u: u.unsqueeze(1), scale=1.0, width=9.0):
    """log p(x) of one sentence under a model whose decoder reads one number u ~ N(0, scale^2),
    by numerical integration over u; z = lift(u) (a 1-D latent: z = u)."""
    grid = torch.linspace(-width, width, 6001)
    one = make_batch([tokens]).repeat(len(grid))
    trace = poutine.trace(poutine.condition(svae.model, data={"z": lift(grid)})).get_trace(one)
    joint = trace.nodes["x"]["fn"].log_prob(one.targets) + torch.distributions.Normal(0.0, scale).log_prob(grid)
    return float(torch.logsumexp(joint, 0) + math.log(float(grid[1] - grid[0])))


@torch.inference_mode()
def test_iw_nll_matches_numerical_integration():
    svae = one_d_model()
    sentences = [[4, 5, 6], [7]]
    torch.manual_seed(1)
    log_px, _, _ = iw_log_likelihood(svae, make_batch(sentences), samples=20000, chunk=5000)
    for i, tokens in enumerate(sentences):
        assert float(log_px[i]) == pytest.approx(exact_log_px(svae, tokens), abs=0.02)


def test_a_refined_proposal_keeps_the_estimate_valid_and_tightens_it():
    svae = one_d_model()
    with torch.no_grad():  # q(z|x) off-centre and too narrow
        svae.posterior.loc.bias += 1.5
        svae.posterior.scale.bias -= 1.5
    sentences = [[4, 5, 6], [7], [3, 3, 5, 6, 7]]
    split = EncodedSplit.from_lists(sentences)
    before = {k: v.clone() for k, v in svae.state_dict().items()}
    exact = [-exact_log_px(svae, tokens) for tokens in sentences]
    many = evaluate(svae, split, samples=20000, chunk=5000, refine=50, progress=False)["sentences"]
    assert [r["nll"] for r in many] == pytest.approx(exact, abs=0.02)  # any proposal: the same log p(x)
    # each ELBO, amortized or refined, is below the log p(x) that quadrature gives
    assert all(-r["elbo"] > e and -r["elbo_amortized"] > e for r, e in zip(many, exact))
    assert all(r["elbo"] > r["elbo_amortized"] + 1.0 for r in many)
    # with few draws the refined proposal is the much closer one (the error is >= 0 on average)
    error = {}
    for refine in (0, 50):
        rows = [evaluate(svae, split, samples=3, refine=refine, seed=seed, progress=False)["sentences"]
                for seed in range(20)]
        error[refine] = sum(r["nll"] - e for run in rows for r, e in zip(run, exact)) / 20
    assert error[0] > 3.0 and abs(error[50]) < 0.05 * error[0]
    assert all(torch.equal(before[k], v) for k, v in svae.state_dict().items())


def test_a_proposal_refined_on_the_iw_bound_keeps_the_estimate_valid_and_tightens_it():
    # a decoder that reads z1 + z2 alone: the posterior is a ridge along z1 - z2, which a diagonal q
    # fitted to the ELBO covers too narrowly, and one fitted to the IW bound covers more widely
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=8, emb_dim=4, hidden=6, z_dim=2)).eval()
    with torch.no_grad():
        svae.decoder.init.weight[:, 1] = svae.decoder.init.weight[:, 0]
        svae.decoder.init.weight.mul_(4.0)
    sentences = [[4, 5, 6], [7], [3, 3, 5, 6, 7]]
    split = EncodedSplit.from_lists(sentences)
    before = {k: v.clone() for k, v in svae.state_dict().items()}
    # the decoder reads u = z1 + z2 ~ N(0, 2), and z = (u / 2, u / 2) gives it
    lift = lambda u: torch.stack([u / 2, u / 2], 1)  # noqa: E731
    exact = [-exact_log_px(svae, tokens, lift, scale=2 ** 0.5, width=12.0) for tokens in sentences]
    options = dict(refine=50, refine_iw=50, refine_draws=8)
    many = evaluate(svae, split, samples=20000, chunk=5000, progress=False, **options)
    assert [r["nll"] for r in many["sentences"]] == pytest.approx(exact, abs=0.02)  # still log p(x)
    assert many["totals"]["refine_iw_steps"] == 50 and many["totals"]["refine_draws"] == 8
    # with 3 draws the proposal fitted to the IW bound is the closer one (errors >= 0 on average)
    error = {}
    for name, extra in (("elbo", dict(refine=50)), ("iw", options)):
        rows = [evaluate(svae, split, samples=3, seed=seed, progress=False, **extra)["sentences"] for seed in range(20)]
        error[name] = sum(r["nll"] - e for run in rows for r, e in zip(run, exact)) / 20
    assert error["elbo"] > 0.05 and error["iw"] < 0.4 * error["elbo"], error
    assert all(torch.equal(before[k], v) for k, v in svae.state_dict().items())


def test_refining_on_the_iw_bound_needs_reparameterized_latents_with_a_density():
    split = EncodedSplit.from_lists([[4, 5, 6], [7]])
    for config, message in ((dict(z_dim=2, guide="delta"), "needs a guide with a density"),
                            (dict(latent="categorical:2,3"), "needs reparameterized latents")):
        torch.manual_seed(0)
        svae = SentenceVAE(ModelConfig(vocab_size=8, emb_dim=4, hidden=6, **config)).eval()
        with pytest.raises(SVAEError, match=message):
            evaluate(svae, split, samples=3, refine_iw=2, progress=False)
    with pytest.raises(SVAEError, match="--refine-draws 0: must be at least 1"):
        evaluate(one_d_model(), split, samples=3, refine_iw=2, refine_draws=0, progress=False)


@pytest.mark.parametrize("where", ["median", "above every dimension"])
def test_validation_shortfall_is_the_floor_less_the_split_average_kl_of_each_dimension(trained_run, where):
    from pyro_svae.evaluation.metrics import validate

    vae = load(trained_run, device="cpu")
    split = vae.split("valid")
    vae.svae.eval()
    with torch.no_grad():  # independently: the encoder's q(z|x) = N(mu, sigma^2) against N(0, I), by hand
        q = vae.svae.q(make_batch([split.sentence(i) for i in range(len(split))])).base_dist
    kl_dims = (0.5 * (q.loc ** 2 + q.scale ** 2 - 1) - q.scale.log()).mean(0)  # [D], averaged over the split
    floor = float(kl_dims.median()) if where == "median" else float(kl_dims.max()) + 1.0
    expected = float((floor - kl_dims).clamp(min=0).sum())
    m = validate(vae.svae, split, batch_size=7, free_bits=floor)  # batches of 7: the floor is on the split
    assert expected > 0 and m["shortfall"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert m["elbo"] == validate(vae.svae, split, batch_size=7)["elbo"]  # the ELBO's draws are the same
    if where != "median":  # every dimension below the floor: ELBO - shortfall = -rec - the floor
        assert m["elbo"] - m["shortfall"] == pytest.approx(-m["rec"] - floor * len(kl_dims), rel=1e-5)


def test_iw_nll_is_below_the_negative_elbo_for_every_sentence(trained_run):
    from pyro_svae.evaluation.metrics import validate

    vae = load(trained_run, device="cpu")
    split = vae.split("valid")
    result = vae.evaluate(split, samples=200, progress=False)
    for row in result["sentences"]:
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
    from pyro_svae.training.run import train

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
    from pyro_svae.inference.refine import refine

    vae = load(trained_run, device="cpu")
    before = {k: v.clone() for k, v in vae.svae.state_dict().items()}
    result = refine(vae.svae, vae.split("valid"), steps=10, progress=False)
    assert result["elbo_after"] > result["elbo_before"] + 0.1  # an amortization gap exists
    assert result["gain"] == pytest.approx(result["elbo_after"] - result["elbo_before"])
    assert all(torch.equal(before[k], v) for k, v in vae.svae.state_dict().items())
    assert all(p.requires_grad for p in vae.svae.parameters())


def test_a_widened_proposal_is_still_valid_and_needs_the_diag_guide():
    svae = one_d_model()
    with torch.no_grad():  # q(z|x) too narrow: a wider proposal is the better one
        svae.posterior.scale.bias -= 1.0
    sentences = [[4, 5, 6], [7], [3, 3, 5, 6, 7]]
    split = EncodedSplit.from_lists(sentences)
    exact = [-exact_log_px(svae, tokens) for tokens in sentences]
    many = evaluate(svae, split, samples=20000, chunk=5000, widen=2.0, progress=False)
    assert many["totals"]["widen"] == 2.0
    assert [r["nll"] for r in many["sentences"]] == pytest.approx(exact, abs=0.03)
    error = {}
    for widen in (1.0, 2.0):
        rows = [evaluate(svae, split, samples=3, widen=widen, seed=seed, progress=False)["sentences"]
                for seed in range(20)]
        error[widen] = sum(r["nll"] - e for run in rows for r, e in zip(run, exact)) / 20
    assert error[2.0] < 0.5 * error[1.0]
    torch.manual_seed(0)
    other = SentenceVAE(ModelConfig(vocab_size=8, emb_dim=4, hidden=6, z_dim=2, guide="fullrank")).eval()
    with pytest.raises(SVAEError, match="needs the diag guide"):
        evaluate(other, split, samples=3, widen=1.5, progress=False)


def test_refined_evaluation_reports_the_amortized_guide_beside_it(trained_run, run_cli):
    vae = load(trained_run, device="cpu")
    split = vae.split("valid", limit=40)
    plain = vae.evaluate(split, samples=50, progress=False)["totals"]
    refined = vae.evaluate(split, samples=50, progress=False, refine=10)["totals"]
    assert refined["refine_steps"] == 10 and "refine_steps" not in plain
    assert refined["elbo"] > refined["elbo_amortized"] + 0.1
    assert refined["nll"] < plain["nll"]
    # AU and the analytic KL describe the amortized guide, untouched by refinement
    assert refined["active_units"] == plain["active_units"]
    assert refined["kl_analytic"] == pytest.approx(plain["kl_analytic"], rel=1e-6)
    code, out, _ = run_cli("evaluate", trained_run, "--split", "valid", "--limit", "40", "--iw-samples", "50",
                           "--refine", "10", "--quiet")
    assert code == 0
    assert f"NLL      {refined['nll']:.2f} nats/sentence  (IW, K=50, q refined by 10 steps)" in out
    assert f"refined  ELBO {refined['elbo_amortized']:.2f} (amortized q) -> {refined['elbo']:.2f}" in out
    fitted = vae.evaluate(split, samples=50, progress=False, refine=10, refine_iw=5, refine_draws=4)["totals"]
    code, out, _ = run_cli("evaluate", trained_run, "--split", "valid", "--limit", "40", "--iw-samples", "50",
                           "--refine", "10", "--refine-iw", "5", "--refine-draws", "4", "--quiet")
    assert code == 0
    assert (f"NLL      {fitted['nll']:.2f} nats/sentence  (IW, K=50, q refined by 10 steps, then 5 steps on its "
            f"4-draw IW bound)") in out


@needs_bf16
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


def test_validation_shortfall_sums_the_same_values_on_a_process_without_a_batch(trained_run):
    from pyro_svae.evaluation.metrics import validate

    class Sharing:  # process `rank` of 2, its totals summed with the other's (recorded, then returned)
        size, sent = 2, []

        def __init__(self, rank):
            self.rank = rank

        def sum(self, values, device):
            self.sent.append(list(values))
            return list(values)

    vae = load(trained_run, device="cpu")
    split = vae.split("valid", limit=5)  # one batch: process 1 validates nothing
    alone = validate(vae.svae, split, free_bits=3.0)
    first, second = (validate(vae.svae, split, free_bits=3.0, world=Sharing(rank)) for rank in (0, 1))
    assert len(Sharing.sent[0]) == len(Sharing.sent[1]) == 5 + 4 + 1  # totals, 4 dimensions, the pooled sites
    assert Sharing.sent[1][5:] == [0.0] * 5  # the batch it traced for the units' shape counts 0
    assert first["shortfall"] == pytest.approx(alone["shortfall"], rel=1e-6)
