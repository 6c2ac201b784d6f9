import csv

import pytest
import torch
from torch import nn

from pyro_svae.checkpoint import load_checkpoint
from pyro_svae.evaluation.metrics import validate
from pyro_svae.training.averaging import WeightAverage
from pyro_svae.training.loop import EMA_EVERY
from pyro_svae import load
from pyro_svae.training.run import train

from conftest import quiet, tiny_config


def test_the_average_follows_the_weights_at_the_stated_rate():
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average = WeightAverage(layer, decay=0.3)
    expected = 1.0
    # d_t = min(0.3, t / (t + 9)): 0.1, 2/11, 0.25, 0.3 (4/13 > 0.3), 0.3
    for t, w in enumerate([2.0, -1.0, 4.0, 0.5, 3.0], start=1):
        with torch.no_grad():
            layer.weight.fill_(w)
        average.update()
        d = min(0.3, t / (t + 9))
        expected = d * expected + (1 - d) * w
        assert float(average.average["weight"]) == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(3.0)
    with average.swapped_in():
        assert float(layer.weight.detach()) == pytest.approx(expected, rel=1e-6)
    assert float(layer.weight.detach()) == 3.0  # its own weight again


def test_a_tied_weight_is_averaged_under_each_of_its_names():
    embed = nn.Embedding(5, 3)
    out = nn.Linear(3, 5, bias=False)
    out.weight = embed.weight
    module = nn.ModuleDict({"embed": embed, "out": out})
    average = WeightAverage(module, decay=0.5)
    with torch.no_grad():
        embed.weight.add_(1.0)
    average.update()
    state = average.averaged_state_dict()
    assert torch.equal(state["embed.weight"], state["out.weight"])
    # d_1 = 0.1: nine tenths of the way from the old weight to the new one, 1 above it
    assert torch.allclose(state["embed.weight"], embed.weight.detach() - 0.1)


def test_with_ema_validation_and_best_pt_use_the_average_and_a_resume_carries_it(corpus, tmp_path):
    options = dict(ema=0.9, eval_every=20, dropout=0.2, word_keep=0.6)
    whole = train(tiny_config(corpus, max_steps=40, **options), str(tmp_path / "a"), log=quiet, progress=False)
    train(tiny_config(corpus, max_steps=17, **options), str(tmp_path / "b"), log=quiet, progress=False)
    rest = train(out_dir=str(tmp_path / "b"), resume=True, overrides={"max_steps": 40}, log=quiet, progress=False)
    assert rest["losses"] == whole["losses"][17:]
    a, b = (load_checkpoint(str(tmp_path / run / "checkpoint.pt")) for run in "ab")
    assert a["ema"]["count"] == 40 // EMA_EVERY and all(torch.equal(a["ema"]["average"][k], b["ema"]["average"][k]) for k in a["ema"]["average"])
    # validation scored the average, best.pt holds it, and training goes on with its own weights
    assert not all(torch.equal(a["model"][k], a["ema"]["average"][k]) for k in a["ema"]["average"])
    best = load_checkpoint(str(tmp_path / "a" / "best.pt"))
    assert "ema" not in best and "optim" not in best
    rows = {int(r["step"]): float(r["val_elbo"]) for r in csv.DictReader(open(tmp_path / "a" / "metrics.csv"))}
    step = best["position"]["step"]
    assert step == 40 and rows[40] > rows[20]
    assert all(torch.equal(best["model"][k], a["ema"]["average"][k]) for k in a["ema"]["average"])
    vae = load(str(tmp_path / "a"), device="cpu")
    assert validate(vae.svae, vae.split("valid"), 64, seed=0)["elbo"] == pytest.approx(rows[step], abs=2e-4)
    last = load(str(tmp_path / "a"), device="cpu", which="last").svae  # checkpoint.pt: its average too
    assert all(torch.equal(p, a["ema"]["average"][k]) for k, p in last.named_parameters())


def test_the_average_starts_again_from_a_decoder_reset_after_pretraining(corpus, tmp_path):
    # the decoder is re-initialized before step 9 (index 8); no update falls on step 9 (EMA_EVERY 4)
    train(tiny_config(corpus, max_steps=9, pretrain_steps=8, ema=0.9, eval_every=9), str(tmp_path / "run"),
          log=quiet, progress=False)
    state = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert state["ema"]["count"] == 0  # restarted, not updated since
    assert all(torch.equal(state["ema"]["average"][k], state["model"][k]) for k in state["ema"]["average"])


def test_the_logs_sample_sentences_are_decoded_from_the_averaged_weights(corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pyro_svae.models.decoding import Greedy

    c = tiny_config(corpus, max_steps=40, eval_every=40, ema=0.99, log="tensorboard")
    out = tmp_path / "run"
    train(c, str(out), log=quiet, progress=False)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    (logged,) = events.Tensors("samples/text_summary")
    vae = load(str(out), device="cpu")  # best.pt: the average that step 40 validated

    def samples():  # as the family draws them: greedy from p(z), the run's seed
        torch.manual_seed(c.seed)
        _, tokens = vae.svae.decode(None, 4, Greedy(unk=False), c.max_len + 1)
        return "\n\n".join(vae.tokenizer.decode(row.tolist()) for row in tokens)

    averaged = samples()
    vae.svae.load_state_dict(load_checkpoint(str(out / "checkpoint.pt"))["model"])  # the raw weights
    assert logged.tensor_proto.string_val[0].decode() == averaged != samples()
