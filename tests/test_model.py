import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_svae.data.corpus import make_batch
from pyro_svae.models.likelihood import token_nll
from pyro_svae.models.vae import ModelConfig, SentenceVAE
from pyro_svae.models.networks import word_dropout
from pyro_svae.data.tokenizers import BOS, PAD, UNK


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    pyro.clear_param_store()
    return SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=2)).eval()


@pytest.fixture
def batch():
    return make_batch([[4, 5, 6], [7, 8]])


def test_trace_has_scaled_z_and_x(tiny, batch):
    trace = poutine.trace(tiny.model).get_trace(batch, size=10, beta=0.3)
    assert trace.nodes["z"]["scale"] == pytest.approx(0.3 * 10 / 2)  # beta times corpus/batch
    assert trace.nodes["x"]["scale"] == pytest.approx(10 / 2)
    assert trace.nodes["x"]["is_observed"] and trace.nodes["x"]["value"].shape == (2, 4)
    assert trace.nodes["z"]["value"].shape == (2, 2)
    guide = poutine.trace(tiny.guide).get_trace(batch, size=10, beta=0.3)
    assert guide.nodes["z"]["scale"] == pytest.approx(0.3 * 10 / 2)


def test_render_model(tiny, batch):
    graph = pyro.render_model(tiny.model, model_args=(batch,), render_distributions=True)
    source = graph.source
    assert "z" in source and "x" in source and "sentences" in source


def decoder_by_hand(dec, inputs, z):
    """log p(x|z) computed from the decoder's raw weights, one LSTM step at a time."""
    raw = z @ dec.init.weight.T + dec.init.bias
    h, c = torch.tanh(raw[:, : dec.hidden]), raw[:, dec.hidden :]
    W_ih, W_hh = dec.rnn.weight_ih_l0, dec.rnn.weight_hh_l0
    b = dec.rnn.bias_ih_l0 + dec.rnn.bias_hh_l0
    logits = []
    for t in range(inputs.shape[1]):
        x = dec.embed.weight[inputs[:, t]]
        i, f, g, o = (x @ W_ih.T + h @ W_hh.T + b).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        logits.append(h @ dec.out.weight.T + dec.out.bias)
    return torch.stack(logits, 1)


def test_elbo_at_fixed_z_equals_hand_computation(tiny, batch):
    z = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    size, beta = 10, 0.5
    guide_trace = poutine.trace(tiny.guide).get_trace(batch, size=size, beta=beta)
    guide_trace.nodes["z"]["value"] = z
    fixed_guide = poutine.replay(tiny.guide, trace=guide_trace)
    elbo = -Trace_ELBO().loss(tiny.model, fixed_guide, batch, size=size, beta=beta)

    with torch.no_grad():
        logp = F.log_softmax(decoder_by_hand(tiny.decoder, batch.inputs, z), -1)
        rec = (logp.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) * batch.mask).sum(-1)
        log_prior = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        h = tiny.encoder(batch.targets, batch.lengths)
        loc, scale = tiny.posterior.loc(h), F.softplus(tiny.posterior.scale(h)) + 1e-5
        log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    expected = size / 2 * (rec + beta * (log_prior - log_q)).sum()
    assert elbo == pytest.approx(float(expected), rel=1e-5)


def test_meanfield_elbo_uses_the_analytic_kl(tiny, batch):
    # With analytic KL the only randomness left is z in log p(x|z): fix it and compare.
    z = torch.tensor([[0.1, 0.2], [-0.3, 0.4]])
    guide_trace = poutine.trace(tiny.guide).get_trace(batch, size=2, beta=1.0)
    guide_trace.nodes["z"]["value"] = z
    elbo = -TraceMeanField_ELBO().loss(tiny.model, poutine.replay(tiny.guide, trace=guide_trace), batch, size=2)
    with torch.no_grad():
        logp = F.log_softmax(decoder_by_hand(tiny.decoder, batch.inputs, z), -1)
        rec = (logp.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) * batch.mask).sum()
        q = tiny.q(batch).base_dist
        kl = (0.5 * (q.scale**2 + q.loc**2 - 1) - q.scale.log()).sum()
    assert elbo == pytest.approx(float(rec - kl), rel=1e-5)


def test_word_dropout_rate_and_protected_tokens():
    torch.manual_seed(0)
    inputs = torch.full((200, 51), 7)
    inputs[:, 0] = BOS
    inputs[:, 40:] = PAD
    out = word_dropout(inputs, keep=0.7)
    words = out[:, 1:40]
    assert (words == UNK).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert (out[:, 0] == BOS).all() and (out[:, 40:] == PAD).all()
    assert (word_dropout(inputs, 0.0)[:, 1:40] == UNK).all()  # inputless decoder
    assert torch.equal(word_dropout(inputs, 1.0), inputs)


def test_language_model_has_no_latent(batch):
    lm = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=0))
    trace = poutine.trace(lm.model).get_trace(batch)
    assert "z" not in trace.nodes and "x" in trace.nodes
    loss = Trace_ELBO().loss(lm.model, lm.guide, batch)
    lm.eval()
    with torch.no_grad():
        logits, _ = lm.decoder(batch.inputs, None)
    nll = F.cross_entropy(logits.transpose(1, 2), batch.targets, ignore_index=PAD, reduction="sum")
    assert loss == pytest.approx(nll.item(), rel=1e-5)


def test_free_bits_objective_floors_each_dimension(tiny, batch):
    from pyro_svae.inference.objectives import FreeBitsELBO

    z = torch.tensor([[0.1, 0.2], [-0.3, 0.4]])
    guide_trace = poutine.trace(tiny.guide).get_trace(batch, size=10, beta=0.5)
    guide_trace.nodes["z"]["value"] = z
    fixed = poutine.replay(tiny.guide, trace=guide_trace)
    free_bits = 0.3
    loss = FreeBitsELBO(free_bits).loss(tiny.model, fixed, batch, size=10, beta=0.5)
    with torch.no_grad():
        logp = F.log_softmax(decoder_by_hand(tiny.decoder, batch.inputs, z), -1)
        rec = (logp.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1) * batch.mask).sum()
        q = tiny.q(batch).base_dist
        kl_dims = (0.5 * (q.scale**2 + q.loc**2 - 1) - q.scale.log()).mean(0)  # [Z], batch-averaged
        floored = kl_dims.clamp(min=free_bits)
    assert (kl_dims < free_bits).any()  # the floor is active in this case
    expected = -(10 / 2 * rec - 0.5 * 10 * floored.sum())
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_free_bits_floor_the_total_kl_of_other_families():
    from pyro_svae.inference.objectives import FreeBitsELBO

    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3, guide="lowrank:1")).eval()
    batch = make_batch([[4, 5, 6], [7, 8]])
    guide_trace = poutine.trace(svae.guide).get_trace(batch, size=10, beta=0.5)
    fixed = poutine.replay(svae.guide, trace=guide_trace)  # the same z in both losses
    plain = FreeBitsELBO(0.0).loss(svae.model, fixed, batch, size=10, beta=0.5)
    floored = FreeBitsELBO(2.0).loss(svae.model, fixed, batch, size=10, beta=0.5)
    with torch.no_grad():  # KL(N(mu, S) || N(0, I)) by hand, batch-averaged
        q = guide_trace.nodes["z"]["fn"]
        cov, mu = q.covariance_matrix, q.loc
        kl = 0.5 * (cov.diagonal(dim1=-2, dim2=-1).sum(-1) + (mu**2).sum(-1) - 3 - torch.logdet(cov))
        kl = float(kl.mean())
    assert kl < 2.0 * 3  # the floor (2 nats x 3 dimensions) is active
    assert math.isfinite(plain)
    assert floored - plain == pytest.approx(0.5 * 10 * (2.0 * 3 - kl), rel=1e-4)  # beta * size * shortfall


def test_importance_weighted_bound_with_one_particle_is_the_elbo(tiny, batch):
    from pyro_svae.inference.objectives import ImportanceWeightedELBO

    pyro.set_rng_seed(3)
    elbo = Trace_ELBO().loss(tiny.model, tiny.guide, batch, size=10, beta=0.5)
    pyro.set_rng_seed(3)  # the same draw of z
    iw = ImportanceWeightedELBO(1)(tiny.model, tiny.guide, batch, size=10, beta=0.5)
    assert float(iw.detach()) == pytest.approx(elbo, rel=1e-5)


def test_importance_weighted_bound_with_free_bits_adds_the_kl_floor_penalty(tiny, batch):
    from pyro_svae.inference.objectives import ImportanceWeightedELBO

    pyro.set_rng_seed(3)
    floored = ImportanceWeightedELBO(4, free_bits=0.3)(tiny.model, tiny.guide, batch, size=10, beta=0.5)
    pyro.set_rng_seed(3)  # the same draws
    plain = ImportanceWeightedELBO(4)(tiny.model, tiny.guide, batch, size=10, beta=0.5)
    with torch.no_grad():
        q = tiny.q(batch).base_dist
        kl_dims = (0.5 * (q.scale**2 + q.loc**2 - 1) - q.scale.log()).mean(0)  # [Z], batch-averaged
    assert (kl_dims < 0.3).any()  # the floor is active in this case
    penalty = 0.5 * 10 * (0.3 - kl_dims).clamp(min=0).sum()  # beta * size * sum_d max(0, fb - KL_d)
    assert float((floored - plain).detach()) == pytest.approx(float(penalty), rel=1e-4)


def test_importance_weighted_bound_rises_with_k_towards_log_px(tiny, batch):
    from pyro_svae.evaluation.metrics import iw_log_likelihood
    from pyro_svae.inference.objectives import ImportanceWeightedELBO

    pyro.set_rng_seed(0)
    with torch.no_grad():
        tiny.decoder.init.weight.mul_(5.0)  # z matters, so q(z|x) is far from the posterior
        log_px = iw_log_likelihood(tiny, batch, samples=20000, chunk=5000)[0].sum()
        bounds = [-float(ImportanceWeightedELBO(k)(tiny.model, tiny.guide, batch.repeat(300))) / 300
                  for k in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2] < float(log_px) + 0.01
    assert float(log_px) - bounds[0] > 0.2  # a visible gap for K to close
    assert float(log_px) - bounds[2] < 0.4 * (float(log_px) - bounds[0])


def test_importance_weighted_loss_gives_gradients_to_encoder_and_decoder(tiny, batch):
    from pyro_svae.inference.objectives import ImportanceWeightedELBO

    tiny.train()
    ImportanceWeightedELBO(4)(tiny.model, tiny.guide, batch, size=10).backward()
    for part in (tiny.encoder, tiny.posterior, tiny.decoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_pretraining_resets_the_decoder_and_keeps_the_encoder(corpus, tmp_path):
    from pyro_svae.training.loop import sentence_trainer
    from pyro_svae.training.run import prepare_run

    from conftest import quiet, tiny_config

    config = tiny_config(corpus, pretrain_steps=5, max_steps=6)
    config, tokenizer, splits = prepare_run(config, str(tmp_path / "run"), quiet)
    trainer = sentence_trainer(config, str(tmp_path / "run"), tokenizer, splits, log=quiet, progress=False)
    family = trainer.family
    assert family.beta(0) == family.beta(4) == pytest.approx(1e-4)
    assert family.beta(5) == family.schedule(0) and family.beta(15) == family.schedule(10)
    encoder = {k: v.clone() for k, v in family.svae.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in family.svae.decoder.state_dict().items()}
    family.before_step(5, trainer.optim, quiet)
    assert all(torch.equal(encoder[k], v) for k, v in family.svae.encoder.state_dict().items())
    assert all(not torch.equal(decoder[k], v) for k, v in family.svae.decoder.state_dict().items())


def test_token_nll_value_and_gradient_equal_cross_entropy():
    torch.manual_seed(1)
    logits = (3 * torch.randn(4, 6, 9, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(1, 9, (4, 6))
    targets[0, 3:] = PAD
    weights = torch.randn(4, 6, dtype=torch.float64)
    ours = token_nll(logits, targets)
    (grad,) = torch.autograd.grad((ours * weights).sum(), logits)
    reference = F.cross_entropy(logits.reshape(-1, 9), targets.reshape(-1), ignore_index=PAD,
                                reduction="none").view(4, 6)
    (expected,) = torch.autograd.grad((reference * weights).sum(), logits)
    assert torch.equal(ours[0, 3:], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(ours, reference, atol=1e-12)
    assert torch.allclose(grad, expected, atol=1e-12)
    assert torch.equal(grad[0, 3:], torch.zeros(3, 9, dtype=torch.float64))  # padding gets no gradient
    with torch.no_grad():
        assert torch.allclose(token_nll(logits, targets), reference, atol=1e-12)
        assert torch.allclose(token_nll(logits, targets, block=5), reference, atol=1e-12)  # 24 rows in 5 blocks


def test_token_nll_refuses_a_second_backward():
    logits = torch.randn(3, 5, requires_grad=True)
    nll = token_nll(logits, torch.tensor([1, 2, 3])).sum()
    nll.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="differentiate once"):
        nll.backward()


def test_token_nll_takes_bf16_logits_and_returns_float32_scores_and_bf16_gradients():
    logits = torch.randn(3, 5).to(torch.bfloat16).requires_grad_()
    targets = torch.tensor([1, 2, 3])
    nll = token_nll(logits, targets)
    assert nll.dtype == torch.float32
    assert torch.allclose(nll, F.cross_entropy(logits.float(), targets, reduction="none"))
    nll.sum().backward()
    assert logits.grad.dtype == torch.bfloat16


def test_tied_decoder_shares_one_small_matrix():
    from pyro_svae.models.networks import Decoder

    torch.manual_seed(0)
    decoder = Decoder(vocab_size=50, emb_dim=8, hidden=6, z_dim=0, tie=True)
    assert decoder.out.weight is decoder.embed.weight
    weight = decoder.embed.weight.detach()
    assert float(weight.abs().max()) <= 0.1 and torch.equal(weight[PAD], torch.zeros(8))
    # initial scores are near uniform: the first loss is close to log V, not far above it
    with torch.no_grad():
        logits, _ = decoder(torch.randint(1, 50, (4, 7)), None)
    nll = F.cross_entropy(logits.reshape(-1, 50), torch.randint(1, 50, (28,)))
    assert abs(float(nll) - math.log(50)) < 0.1


def test_bag_of_words_term_is_added_in_training_only(batch):
    torch.manual_seed(0)
    pyro.clear_param_store()
    vae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=2, bow=0.7))
    z = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    model = poutine.condition(vae.model, data={"z": z})
    site = poutine.trace(model).get_trace(batch, size=10).nodes["bow"]  # a new module trains
    with torch.no_grad():
        logp = F.log_softmax(z @ vae.bow.weight.T + vae.bow.bias, -1)
        hand = 0.7 * (logp.gather(1, batch.targets) * batch.mask).sum(-1)  # words and </s>, not <pad>
    assert torch.allclose(site["fn"].log_prob(site["value"]), hand, atol=1e-6)
    assert site["scale"] == pytest.approx(10 / 2)
    vae.eval()
    assert "bow" not in poutine.trace(model).get_trace(batch, size=10).nodes  # evaluation is the ELBO alone


@pytest.mark.parametrize("objective", ["trace", "meanfield", "free_bits", "iw"])
def test_every_training_objective_counts_the_bag_of_words_term(batch, objective):
    """The free-bits ELBO once summed the sentences' site alone and dropped the pyro.factor."""
    from pyro_svae.inference.objectives import FreeBitsELBO, ImportanceWeightedELBO, ReparamELBO

    torch.manual_seed(0)
    pyro.clear_param_store()
    vae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=2, bow=0.7)).train()
    loss = {"trace": ReparamELBO(), "meanfield": FreeBitsELBO(0.0), "free_bits": FreeBitsELBO(3.0),
            "iw": ImportanceWeightedELBO(1)}[objective]
    guide_trace = poutine.trace(vae.guide).get_trace(batch, size=10, beta=0.5)
    fixed = poutine.replay(vae.guide, trace=guide_trace)  # the same z with and without the term
    value = loss.differentiable_loss(vae.model, fixed, batch, size=10, beta=0.5, word_keep=1.0) \
        if objective != "iw" else loss(vae.model, fixed, batch, size=10, beta=0.5, word_keep=1.0)
    value.backward()
    assert vae.bow.weight.grad is not None and vae.bow.weight.grad.abs().sum() > 0
    z = guide_trace.nodes["z"]["value"].detach()
    with torch.no_grad():
        logp = F.log_softmax(z @ vae.bow.weight.T + vae.bow.bias, -1)
        term = 0.7 * (logp.gather(1, batch.targets) * batch.mask).sum()
    vae.bow = None  # the same objective without the term
    without = loss.differentiable_loss(vae.model, fixed, batch, size=10, beta=0.5, word_keep=1.0) \
        if objective != "iw" else loss(vae.model, fixed, batch, size=10, beta=0.5, word_keep=1.0)
    assert float((value - without).detach()) == pytest.approx(-10 / 2 * float(term), rel=1e-4)


def test_bag_of_words_term_keeps_z_in_use_without_a_floor(corpus, tmp_path):
    import csv

    from pyro_svae.training.run import train

    from conftest import quiet, tiny_config

    kl = {}
    for bow in (0.0, 1.0):  # no free bits: without the term the toy model's KL collapses towards 0
        pyro.clear_param_store()
        run = tmp_path / f"bow{bow}"
        train(tiny_config(corpus, max_steps=100, eval_every=50, kl_schedule="linear:0,50", bow=bow), str(run),
              log=quiet, progress=False)
        kl[bow] = float(list(csv.DictReader(open(run / "metrics.csv")))[-1]["val_kl"])
    assert kl[0.0] < 0.1 and kl[1.0] > 5 * kl[0.0] + 0.2


def test_skip_adds_a_linear_term_in_z_to_every_step_and_starts_at_zero(batch):
    from pyro_svae.models.networks import Decoder

    torch.manual_seed(0)
    dec = Decoder(12, 5, 6, 2, skip=True)
    z = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    plain, _ = dec(batch.inputs, z)
    with torch.no_grad():
        dec.skip.weight.normal_()
    skipped, _ = dec(batch.inputs, z)
    assert torch.allclose(skipped - plain, (z @ dec.skip.weight.T).unsqueeze(1).expand_as(plain), atol=1e-6)
    # a decoding step (one token, carried state) adds the same term
    step, _ = dec.step(batch.inputs[:, 0], z, None)
    assert torch.allclose(step, skipped[:, 0], atol=1e-6)


def test_inputless_decoder_reads_no_word_in_scoring_or_decoding(batch):
    from pyro_svae.models.decoding import Greedy

    torch.manual_seed(0)
    vae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=2, word_keep=0.0)).eval()
    z = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    other = batch.inputs.clone()
    other[other > BOS] = 11  # other words, the same <s> and padding
    with torch.no_grad():
        assert torch.equal(vae.decoder(batch.inputs, z)[0], vae.decoder(other, z)[0])
        unk = batch.inputs.masked_fill(batch.inputs > BOS, UNK)
        assert torch.equal(vae.decoder(batch.inputs, z)[0], vae.decoder(unk, z)[0])
        # the evaluated ELBO's likelihood is the one trained: <unk> inputs, whatever the words
        x = poutine.trace(poutine.condition(vae.model, data={"z": z})).get_trace(batch).nodes["x"]
        logits = vae.decoder(unk, z)[0]
        assert torch.allclose(x["fn"].log_prob(batch.targets), -token_nll(logits, batch.targets).sum(-1))
        # decoding feeds <unk>, not its previous word: greedy equals argmax of the <unk>-fed logits
        tokens = Greedy()(vae.decoder, z, 4, 2)
        fed = torch.cat([torch.full((2, 1), BOS), torch.full((2, 3), UNK)], 1)[:, : tokens.shape[1]]
        expected = vae.decoder(fed, z)[0]
        expected[..., [PAD, BOS]] = -float("inf")
        real = tokens != PAD  # up to and with </s>
        assert torch.equal(tokens[real], expected.argmax(-1)[real])
    assert not SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=2, word_keep=0.5)).decoder.inputless


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_a_pooled_encoder_summarizes_each_sentences_own_outputs_whatever_the_padding(pool):
    from pyro_svae.models.networks import Encoder

    torch.manual_seed(0)
    encoder = Encoder(12, 5, 4, bidirectional=True, pool=pool).eval()
    batch = make_batch([[4, 5, 6, 7, 4], [8, 9]])  # the second padded by 3
    pooled = encoder(batch.targets, batch.lengths)
    for row in range(2):
        tokens = batch.targets[row : row + 1, : batch.lengths[row]]  # its words and </s>
        states, _ = encoder.rnn(encoder.embed(tokens))  # [1, T, 2 x 4], one sentence, no padding
        expected = states[0].amax(0) if pool == "max" else states[0].mean(0)
        assert torch.allclose(pooled[row], expected, atol=1e-6)
    assert pooled.shape == (2, 8)
    # and the pooled summary is not the final states' (the default, "last")
    encoder.pool = "last"
    assert not torch.allclose(encoder(batch.targets, batch.lengths), pooled)
