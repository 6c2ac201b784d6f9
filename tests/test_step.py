"""The training step's own machinery (#26): DeviceSVI against Pyro's stock SVI, registration only
at the first step, the compiled decoder and the traced step against the eager one, and no host
read per step."""

import os
import traceback

import pyro
import pytest
import torch
import torch._dynamo
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_svae.checkpoint import load_checkpoint
from pyro_svae.data.corpus import make_batch
from pyro_svae.inference.objectives import FreeBitsELBO, ReparamELBO
from pyro_svae.models.vae import ModelConfig, SentenceVAE
from pyro_svae.training import loop
from pyro_svae.training.optim import GlobalClipAdam
from pyro_svae.training.run import train
from pyro_svae.models.registration import known_params
from pyro_svae.training.step import DeviceSVI, TracedLoss, compile_networks

from conftest import quiet, tiny_config

BATCHES = [make_batch([[4, 5, 6, 7], [7, 8], [9, 10, 11]]), make_batch([[5, 5], [6, 9, 4, 4, 8]]),
           make_batch([[11, 4], [8, 8, 8], [10]])]
STEP = dict(size=50, beta=0.4, word_keep=0.8)


def steps(svi_class, loss, validation, bow=0.0, rounds=2):
    """Train a fresh tiny VAE for len(BATCHES) x rounds steps from one seed: -> (losses, parameters)."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3, bow=bow)).train()
    svi = svi_class(svae.model, svae.guide, GlobalClipAdam(1e-2, 5.0), loss)
    with pyro.validation_enabled(validation):
        losses = [float(svi.step(b, **STEP)) for _ in range(rounds) for b in BATCHES]
    return losses, [p.detach().clone() for p in svae.parameters()]


@pytest.mark.parametrize("validation", [False, True])
def test_device_step_trains_exactly_as_pyros_stock_svi(validation):
    # ReparamELBO's lean traces, and no registration after the first step, change nothing: the
    # same losses and weights as SVI with Trace_ELBO, step after step
    ours, ours_params = steps(DeviceSVI, ReparamELBO(), validation)
    stock, stock_params = steps(SVI, Trace_ELBO(), validation)
    assert ours == pytest.approx(stock, rel=1e-6)
    for a, b in zip(ours_params, stock_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert ours[0] != ours[3]  # the weights moved between the rounds


def test_free_bits_elbo_at_zero_floor_trains_as_the_mean_field_elbo():
    ours, ours_params = steps(DeviceSVI, FreeBitsELBO(0.0), False, bow=0.5)
    stock, stock_params = steps(SVI, TraceMeanField_ELBO(), False, bow=0.5)
    assert ours == pytest.approx(stock, rel=1e-6)
    for a, b in zip(ours_params, stock_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_networks_are_registered_with_pyro_at_the_first_step_only(monkeypatch):
    calls = []
    real = pyro.module
    monkeypatch.setattr(pyro, "module", lambda name, m, *a, **k: calls.append(name) or real(name, m, *a, **k))
    torch.manual_seed(0)
    pyro.clear_param_store()
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3)).train()
    svi = DeviceSVI(svae.model, svae.guide, GlobalClipAdam(1e-2, 5.0), ReparamELBO())
    svi.step(BATCHES[0], **STEP)
    assert sorted(calls) == ["decoder", "encoder", "posterior", "prior"]
    before = [p.detach().clone() for p in svae.parameters()]
    for b in BATCHES:
        svi.step(b, **STEP)
    assert len(calls) == 4  # no registration after the first step ...
    assert all((a != p).any() for a, p in zip(before, svae.parameters()))  # ... and every weight still trains
    assert len(svi.params) == len(list(svae.parameters()))
    svae.model(BATCHES[0], **STEP)  # outside a step the model registers its networks as any Pyro model
    assert calls[4:] == ["decoder", "prior"]


def test_compiled_decoder_gives_the_eager_loss_and_gradients():
    torch.manual_seed(0)
    pyro.clear_param_store()
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3, skip=True)).train()
    elbo = ReparamELBO()

    def loss_and_grads(batch):
        svae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(1)
        loss = elbo.differentiable_loss(svae.model, svae.guide, batch, **STEP)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in svae.named_parameters()}

    eager = [loss_and_grads(b) for b in BATCHES]
    names = list(svae.state_dict())
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compile_networks(svae, "decoder")
    assert list(svae.state_dict()) == names  # checkpoints keep their keys
    for b, (loss, grads) in zip(BATCHES, eager):
        compiled_loss, compiled_grads = loss_and_grads(b)
        torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-5)
        assert compiled_grads.keys() == grads.keys()
        for n in grads:
            torch.testing.assert_close(compiled_grads[n], grads[n], rtol=1e-4, atol=1e-6)
    assert counters["stats"]["unique_graphs"] >= 1  # compiled graphs ran, not eager fallbacks alone


def on_host_by_design():
    """Whether the caller is the data pipeline (pyro_svae/data: batch orders, positions and
    lengths, host tensors that Batch.to leaves on the host), whose reads never wait for a device."""
    return any(os.sep + os.path.join("pyro_svae", "data") + os.sep in f.filename for f in traceback.extract_stack())


def test_the_training_loop_reads_no_device_value_per_step(corpus, tmp_path, monkeypatch):
    # every way a tensor's value reaches the host, counted while the loop runs its steps (not while
    # it validates): one read of the pending steps' values at step 1 and every READ_EVERY steps.
    # Building a step's trace (--compile step, once per batch shape) reads the tracer's own sizes,
    # host values that stand for shapes, not the device's: counted apart
    reads, counting, tracing = [], [False], []
    for method in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy"):
        real = getattr(torch.Tensor, method)

        def counted(self, *args, _real=real, _name=method, **kwargs):
            if counting[0] and not on_host_by_design():
                (tracing if torch._C._get_tracing_state() is not None else reads).append(_name)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, method, counted)
    real_evaluate, real_run = loop.Trainer.evaluate, loop.Trainer.run

    def evaluate(self, *args):
        counting[0] = False
        try:
            return real_evaluate(self, *args)
        finally:
            counting[0] = True

    def run(self):
        counting[0] = True
        try:
            return real_run(self)
        finally:
            counting[0] = False
    monkeypatch.setattr(loop.Trainer, "evaluate", evaluate)
    monkeypatch.setattr(loop.Trainer, "run", run)
    summary = train(tiny_config(corpus, max_steps=2 * loop.READ_EVERY, eval_every=1000, free_bits=0.5, bow=0.5,
                                compile="step"),
                    str(tmp_path / "run"), log=quiet, progress=False)
    assert summary["step"] == 40 and len(summary["losses"]) == 40
    assert reads == ["tolist"] * 3  # steps 1, 20 and 40: 40 steps, 3 reads
    assert tracing  # the steps were traced (--compile step), and replayed without a read


def test_traced_step_gives_the_eager_loss_gradients_and_random_stream():
    # --compile step: each shape's step replayed from a TorchScript trace of the Pyro program is
    # bitwise the eager step, on batches of one shape that the trace was not built on
    torch.manual_seed(0)
    pyro.clear_param_store()
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3, bow=0.5, dropout=0.2, skip=True)).train()
    elbo = FreeBitsELBO(0.3)

    def eager(batch, **kw):
        return elbo.differentiable_loss(svae.model, svae.guide, batch, **kw)
    traced = TracedLoss(eager, svae, warn=pytest.fail)
    same_shape = [make_batch([[4, 5, 6, 7], [7, 8], [9, 10, 11]]), make_batch([[5, 5, 9], [6, 9, 4, 4], [8]]),
                  make_batch([[11, 4, 4, 4], [8, 8, 8], [10, 6]])]

    def loss_grads_rng(loss_fn, batch, beta):
        svae.zero_grad(set_to_none=True)
        loss = loss_fn(batch, size=50, beta=beta, word_keep=0.8)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in svae.parameters()], torch.get_rng_state()

    with known_params():
        for i, (b, beta) in enumerate(zip(same_shape * 2, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6))):
            torch.manual_seed(i)
            loss, grads, rng = loss_grads_rng(traced.loss, b, beta)
            torch.manual_seed(i)
            want_loss, want_grads, want_rng = loss_grads_rng(eager, b, beta)
            assert torch.equal(loss, want_loss) and torch.equal(rng, want_rng)
            for g, w in zip(grads, want_grads):
                assert torch.equal(g, w)
    assert traced.usable and len(traced.traces) == 1 and not traced.unchecked  # one shape, traced, checked twice


def test_a_trace_that_fixes_a_value_read_from_the_batch_is_caught_and_the_run_goes_on_eager():
    # a loss that reads the batch on the host: the trace keeps the first batch's value, which the
    # check at the second batch of that shape catches; that step and the rest are eager
    torch.manual_seed(0)
    svae = SentenceVAE(ModelConfig(vocab_size=12, emb_dim=5, hidden=6, z_dim=3)).train()
    elbo = ReparamELBO()

    def reads_the_host(batch, **kw):
        return elbo.differentiable_loss(svae.model, svae.guide, batch, **kw) * float(batch.targets.sum())
    warnings = []
    traced = TracedLoss(reads_the_host, svae, warn=warnings.append)
    first, second = make_batch([[4, 5, 6], [7, 8]]), make_batch([[9, 10, 11], [5, 6]])
    with known_params():
        traced.loss(first, size=50, beta=0.5, word_keep=1.0)
        assert traced.usable  # built on this batch, and equal to the eager step on it
        torch.manual_seed(3)
        loss = traced.loss(second, size=50, beta=0.5, word_keep=1.0)
        torch.manual_seed(3)
        assert torch.equal(loss, reads_the_host(second, size=50, beta=0.5, word_keep=1.0))
    assert not traced.usable and len(warnings) == 1 and "training continues eager" in warnings[0]


@pytest.mark.parametrize("extra", [dict(free_bits=0.5, dropout=0.2, bow=0.5), dict(iw_particles=3), dict(model="lm")])
def test_a_run_with_compile_step_equals_the_eager_run(corpus, tmp_path, extra):
    runs = {}
    for mode in ("off", "step"):
        pyro.clear_param_store()
        summary = train(tiny_config(corpus, max_steps=30, compile=mode, **extra), str(tmp_path / mode), log=quiet,
                        progress=False)
        runs[mode] = summary["losses"], load_checkpoint(str(tmp_path / mode / "checkpoint.pt"))["model"]
    assert runs["step"][0] == runs["off"][0] and len(runs["off"][0]) == 30
    for name, value in runs["off"][1].items():
        assert torch.equal(runs["step"][1][name], value), name
