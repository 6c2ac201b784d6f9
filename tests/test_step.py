"""The training step's own machinery (#26): DeviceSVI against Pyro's stock SVI, registration only
at the first step, the compiled decoder against the eager one, and no host read per step."""

import os
import traceback

import pyro
import pytest
import torch
import torch._dynamo
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_svae.data.corpus import make_batch
from pyro_svae.inference.objectives import FreeBitsELBO, ReparamELBO
from pyro_svae.models.vae import ModelConfig, SentenceVAE
from pyro_svae.training import loop
from pyro_svae.training.optim import GlobalClipAdam
from pyro_svae.training.run import train
from pyro_svae.training.step import DeviceSVI, compile_networks

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
    # it validates): one read of the pending steps' values at step 1 and every READ_EVERY steps
    reads, counting = [], [False]
    for method in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy"):
        real = getattr(torch.Tensor, method)

        def counted(self, *args, _real=real, _name=method, **kwargs):
            if counting[0] and not on_host_by_design():
                reads.append(_name)
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
    summary = train(tiny_config(corpus, max_steps=2 * loop.READ_EVERY, eval_every=1000, free_bits=0.5, bow=0.5),
                    str(tmp_path / "run"), log=quiet, progress=False)
    assert summary["step"] == 40 and len(summary["losses"]) == 40
    assert reads == ["tolist"] * 3  # steps 1, 20 and 40: 40 steps, 3 reads
