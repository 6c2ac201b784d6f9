import csv
import math
import os
import signal

import pytest
import torch

from pyro_svae.checkpoint import atomic_save, load_checkpoint
from pyro_svae.errors import SVAEError
from pyro_svae.training.run import train

from conftest import needs_bf16, quiet, tiny_config

# dropout, word dropout and clipping all on: every source of randomness must resume exactly
NOISY = dict(dropout=0.2, word_keep=0.6, clip_norm=0.5, eval_every=7)


def test_resumed_losses_equal_uninterrupted(corpus, tmp_path):
    whole = train(tiny_config(corpus, max_steps=40, **NOISY), str(tmp_path / "a"), log=quiet, progress=False)
    first = train(tiny_config(corpus, max_steps=17, **NOISY), str(tmp_path / "b"), log=quiet, progress=False)
    rest = train(out_dir=str(tmp_path / "b"), resume=True, overrides={"max_steps": 40}, log=quiet, progress=False)
    assert len(whole["losses"]) == 40 and len(rest["losses"]) == 23
    assert first["losses"] + rest["losses"] == whole["losses"]  # bit for bit
    a = load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_metrics_csv_and_run_directory(corpus, tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_config(corpus, max_steps=30, eval_every=10), str(run), log=quiet, progress=False)
    assert summary["stopped"] == "max-steps"
    assert {"config.json", "tokenizer.json", "store.json", "train.tokens", "train.offsets", "checkpoint.pt", "best.pt", "metrics.csv"} <= set(os.listdir(run))
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert float(rows[-1]["val_elbo"]) > float(rows[0]["val_elbo"])  # it learns
    state = load_checkpoint(str(run / "checkpoint.pt"))
    assert state["position"]["step"] == 30 and "optim" in state and "rng" in state


def test_crash_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"model": {"w": torch.ones(3)}}, path)

    def crashing_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(SVAEError, match="checkpoint.pt: could not be written .*previous checkpoint.pt is intact"):
        atomic_save({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_ctrl_c_saves_and_resumes_exactly(corpus, tmp_path):
    whole = train(tiny_config(corpus, max_steps=30, **NOISY), str(tmp_path / "a"), log=quiet, progress=False)

    def interrupt_at_first_eval(message):
        if message.startswith("step 7:"):
            os.kill(os.getpid(), signal.SIGINT)

    first = train(tiny_config(corpus, max_steps=30, **NOISY), str(tmp_path / "b"),
                  log=interrupt_at_first_eval, progress=False)
    assert first["stopped"] == "interrupted" and first["step"] == 7  # no step after the signal
    assert load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["position"]["step"] == 7
    rest = train(out_dir=str(tmp_path / "b"), resume=True, log=quiet, progress=False)
    assert first["losses"] + rest["losses"] == whole["losses"]


def test_cli_train_then_resume(corpus, tmp_path, run_cli):
    run = str(tmp_path / "run")
    code, out, err = run_cli("train", "--data", str(corpus), "--out", run, "--max-steps", "10", "--quiet",
                             "--emb-dim", "16", "--hidden", "24", "--z-dim", "4", "--eval-every", "5")
    assert code == 0, err
    code, out, err = run_cli("train", "--resume", run, "--max-steps", "20", "--quiet")
    assert code == 0, err
    assert "resuming" in err and "at step 20" in err
    rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]


def test_learning_rate_decays_on_a_plateau_and_resumes(corpus, tmp_path, monkeypatch):
    import pyro_svae.training.family as training

    real = training.validate

    def worsening(*args, **kwargs):  # each validation worse
        m = real(*args, **kwargs)
        worsening.calls += 1
        return {**m, "elbo": -1000.0 - worsening.calls}

    worsening.calls = 0
    monkeypatch.setattr(training, "validate", worsening)
    cfg = dict(lr=0.01, lr_decay=0.5, eval_every=2)
    whole = train(tiny_config(corpus, max_steps=8, **cfg), str(tmp_path / "a"), log=quiet, progress=False)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "a" / "metrics.csv"))]
    assert lrs == [0.01, 0.005, 0.0025, 0.00125]  # the first evaluation is the best so far
    state = load_checkpoint(str(tmp_path / "a" / "checkpoint.pt"))
    assert [group["lr"] for group in state["optim"]["param_groups"]] == [0.00125]
    worsening.calls = 0
    first = train(tiny_config(corpus, max_steps=4, **cfg), str(tmp_path / "b"), log=quiet, progress=False)
    rest = train(out_dir=str(tmp_path / "b"), resume=True, overrides={"max_steps": 8}, log=quiet, progress=False)
    assert first["losses"] + rest["losses"] == whole["losses"]


@pytest.mark.parametrize("schedule,factors", [
    ("linear", [1 - s / 8 for s in range(8)]),
    ("cosine", [0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)]),
])
def test_the_lr_schedule_falls_to_zero_over_the_runs_steps(corpus, tmp_path, monkeypatch, schedule, factors):
    from pyro_svae.training.optim import GlobalClipAdam

    real, used = GlobalClipAdam.__call__, []

    def spy(self, params, *args, **kwargs):  # the rate each step's update uses
        real(self, params, *args, **kwargs)
        used.append(self.adam.param_groups[0]["lr"])

    monkeypatch.setattr(GlobalClipAdam, "__call__", spy)
    cfg = dict(lr=0.01, lr_schedule=schedule, eval_every=2)
    whole = train(tiny_config(corpus, max_steps=8, **cfg), str(tmp_path / "a"), log=quiet, progress=False)
    assert used == pytest.approx([0.01 * f for f in factors])
    lrs = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "a" / "metrics.csv"))]
    assert lrs == pytest.approx([0.01 * (1 - s / 8) if schedule == "linear" else
                                 0.005 * (1 + math.cos(math.pi * s / 8)) for s in (2, 4, 6, 8)])
    shorter = train(tiny_config(corpus, max_steps=4, **cfg), str(tmp_path / "b"), log=quiet, progress=False)
    assert shorter["losses"][:2] == whole["losses"][:2]  # the first update is at the full rate in both
    assert shorter["losses"][2] != whole["losses"][2]  # then the shorter run's rate falls faster


@needs_bf16
def test_bf16_autocast_trains_close_to_float32(corpus, tmp_path):
    fp32 = train(tiny_config(corpus, max_steps=3), str(tmp_path / "a"), log=quiet, progress=False)
    bf16 = train(tiny_config(corpus, max_steps=3, amp="bf16"), str(tmp_path / "b"), log=quiet, progress=False)
    assert all(torch.isfinite(torch.tensor(bf16["losses"])))
    assert bf16["losses"][0] == pytest.approx(fp32["losses"][0], rel=0.03)  # same draws, bf16 rounding
    assert bf16["losses"][0] != fp32["losses"][0]  # and it did run in lower precision


def test_a_nonfinite_loss_stops_with_one_error_and_keeps_the_checkpoint(corpus, tmp_path, monkeypatch):
    from pyro.infer.util import is_validation_enabled

    from pyro_svae.errors import SVAEError
    from pyro_svae.training.step import DeviceSVI as SVI

    real_step, seen = SVI.step, []

    def step(self, *args, **kwargs):
        seen.append(is_validation_enabled())
        loss = real_step(self, *args, **kwargs)
        return float("nan") if len(seen) >= 13 else loss

    monkeypatch.setattr(SVI, "step", step)
    run = tmp_path / "run"
    with pytest.raises(SVAEError, match=r"loss became nan at step 13 .*lower --lr"):
        train(tiny_config(corpus, max_steps=20, eval_every=10), str(run), log=quiet, progress=False)
    # steps run without Pyro's validation; the losses are read at step 20 (READ_EVERY, max-steps), before
    # that step's validation would write a checkpoint of the broken weights
    assert seen == [False] * 20
    assert load_checkpoint(str(run / "checkpoint.pt"))["position"]["step"] == 10


@pytest.mark.parametrize("skip", [False, True])
def test_a_vae_warm_started_from_the_lm_begins_as_the_lm(corpus, tmp_path, skip):
    from pyro_svae import load
    from pyro_svae.data.corpus import make_batch
    from pyro_svae.errors import SVAEError

    train(tiny_config(corpus, model="lm", max_steps=30, tie=True), str(tmp_path / "lm"), log=quiet, progress=False)
    # 0 steps of training: the VAE's first best.pt holds its starting point
    vae_run = str(tmp_path / "vae")
    train(tiny_config(corpus, max_steps=1, lr=1e-12, tie=True, skip=skip, init_decoder=str(tmp_path / "lm")),
          vae_run, log=quiet, progress=False)
    lm, vae = load(str(tmp_path / "lm"), device="cpu"), load(vae_run, device="cpu", which="last")
    split = lm.split("test")
    batch = make_batch([split.sentence(i) for i in range(8)])
    with torch.no_grad():
        lm_logits, _ = lm.svae.decoder(batch.inputs, None)
        for z in (torch.zeros(8, 4), 3 * torch.randn(8, 4)):  # whatever z: the LM's scores
            vae_logits, _ = vae.svae.decoder(batch.inputs, z)
            assert torch.allclose(vae_logits, lm_logits, atol=1e-5)
    # another vocabulary: one line, before any training
    other = tmp_path / "other"
    train(tiny_config(corpus, model="lm", max_steps=2, vocab_size=12, tie=True), str(other), log=quiet, progress=False)
    with pytest.raises(SVAEError, match="another vocabulary"):
        train(tiny_config(corpus, tie=True, init_decoder=str(other)), str(tmp_path / "v2"), log=quiet, progress=False)
    with pytest.raises(SVAEError, match="not a trained run"):
        train(tiny_config(corpus, init_decoder=str(tmp_path / "nowhere")), str(tmp_path / "v3"), log=quiet,
              progress=False)


def test_iwae_training_selects_best_by_the_validation_bound(corpus, tmp_path):
    from pyro_svae.errors import SVAEError

    run = tmp_path / "iw"
    train(tiny_config(corpus, max_steps=40, eval_every=10, iw_particles=3, kl_schedule="constant", lr=3e-3),
          str(run), log=quiet, progress=False)
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    bounds = [float(r["val_iw"]) for r in rows]
    assert all(float(r["val_iw"]) >= float(r["val_elbo"]) for r in rows)  # the K-sample bound >= the ELBO
    assert bounds[-1] > bounds[0]  # it learns
    best = max(rows, key=lambda r: float(r["val_iw"]))
    assert load_checkpoint(str(run / "best.pt"))["position"]["step"] == int(best["step"])
    with pytest.raises(SVAEError, match="is for a VAE"):
        train(tiny_config(corpus, model="lm", iw_particles=3), str(tmp_path / "x"), log=quiet, progress=False)
    with pytest.raises(SVAEError, match="--bow predicts words from z"):
        train(tiny_config(corpus, model="lm", bow=1.0), str(tmp_path / "x"), log=quiet, progress=False)


def test_init_from_starts_from_every_weight_of_another_run(corpus, tmp_path):
    from pyro_svae.errors import SVAEError

    train(tiny_config(corpus, max_steps=30), str(tmp_path / "a"), log=quiet, progress=False)
    train(tiny_config(corpus, max_steps=1, lr=1e-12, init_from=str(tmp_path / "a")), str(tmp_path / "b"),
          log=quiet, progress=False)
    a = load_checkpoint(str(tmp_path / "a" / "best.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(SVAEError, match="another model size"):
        train(tiny_config(corpus, hidden=32, init_from=str(tmp_path / "a")), str(tmp_path / "c"), log=quiet,
              progress=False)
    with pytest.raises(SVAEError, match="give one"):
        train(tiny_config(corpus, init_from=str(tmp_path / "a"), init_decoder=str(tmp_path / "a")),
              str(tmp_path / "d"), log=quiet, progress=False)


def test_presets_give_defaults_that_options_override(corpus, tmp_path, run_cli):
    import json

    from pyro_svae.training.config import TrainConfig, check_config, config_from

    assert config_from() == TrainConfig()
    bowman = config_from("bowman2015", z_dim=8)
    assert (bowman.z_dim, bowman.free_bits, bowman.kl_schedule, bowman.patience) == (8, 0.0, "logistic:0.0025,2500", 0)
    assert TrainConfig().free_bits > 0 and TrainConfig().patience > 0  # the default keeps the latent, stops early
    assert (TrainConfig().skip, TrainConfig().bow, bowman.skip, bowman.bow) == (True, 0.0, False, 0.0)
    # the LM has no z to read or to predict words from: both are off unless given, and then an error
    for lm in (TrainConfig(model="lm"), config_from(model="lm"), config_from("bowman2015", model="lm")):
        assert (lm.skip, lm.bow) == (False, 0.0)
        check_config(lm)
    with pytest.raises(SVAEError, match="--skip adds z to the logits"):
        check_config(TrainConfig(model="lm", skip=True))
    code, _, err = run_cli("train", "--data", str(corpus), "--out", str(tmp_path / "lm"), "--model", "lm", "--bow", "1")
    assert code != 0 and "--bow predicts words from z" in err
    run = tmp_path / "run"
    code, out, err = run_cli("train", "--data", str(corpus), "--out", str(run), "--preset", "bowman2015",
                             "--emb-dim", "8", "--hidden", "8", "--max-steps", "2", "--eval-every", "2", "--quiet")
    assert code == 0, err
    stored = json.loads((run / "config.json").read_text())["train"]
    assert (stored["preset"], stored["emb_dim"], stored["z_dim"], stored["free_bits"]) == ("bowman2015", 8, 13, 0.0)
    assert (stored["hidden"], stored["enc_hidden"], stored["bidirectional"]) == (8, 0, False)  # 8 units, one way


def test_the_encoder_summary_follows_the_decoder_size_unless_given():
    from pyro_svae.models.vae import SentenceVAE
    from pyro_svae.training.config import TrainConfig, config_from
    from pyro_svae.training.rundir import model_config

    # -1 (the default): half of --hidden a direction when bidirectional, else --hidden (0)
    sizes = {(c.hidden, c.enc_hidden) for c in [TrainConfig(hidden=512), config_from(hidden=9)]}
    assert sizes == {(512, 256), (9, 4)}
    assert (TrainConfig().hidden, TrainConfig().enc_hidden) == (192, 96)
    assert TrainConfig(bidirectional=False).enc_hidden == 0 and TrainConfig(enc_hidden=-1, hidden=64).enc_hidden == 32
    assert TrainConfig(hidden=64, enc_hidden=48).enc_hidden == 48
    # a stored config keeps what it was built with: 0 (an earlier version's default) stays --hidden a direction
    earlier = TrainConfig(**{**vars(TrainConfig()), "hidden": 24, "enc_hidden": 0})
    assert earlier.enc_hidden == 0 and TrainConfig(**vars(earlier)) == earlier
    for c, summary in ((TrainConfig(hidden=24), 24), (earlier, 48)):
        svae = SentenceVAE(model_config({"train": vars(c)}, 50))
        assert svae.encoder.out_dim == summary


def test_a_collapsing_latent_is_warned_about_once(corpus, tmp_path, monkeypatch):
    import pyro_svae.training.family as training

    real = training.validate
    monkeypatch.setattr(training, "validate", lambda *a, **k: {**real(*a, **k), "kl": 0.2})
    lines = []
    train(tiny_config(corpus, max_steps=30, eval_every=10), str(tmp_path / "run"), log=lines.append, progress=False)
    warnings = [line for line in lines if line.startswith("warning: validation KL 0.20")]
    assert len(warnings) == 1 and "--free-bits" in warnings[0]
    lines.clear()
    train(tiny_config(corpus, model="lm", max_steps=10), str(tmp_path / "lm"), log=lines.append, progress=False)
    assert not [line for line in lines if line.startswith("warning")]  # a language model has no latent


def test_the_li2019_autoencoder_and_plain_presets_are_the_defaults_with_their_changes():
    from pyro_svae.training.config import check_config, config_from

    default, li, ae = config_from("default"), config_from("li2019"), config_from("autoencoder", free_bits=0.1)
    assert li.pretrain_steps == 1000 and {**vars(li), "pretrain_steps": 0, "preset": "default"} == vars(default)
    assert (ae.kl_schedule, ae.free_bits, ae.select) == ("constant:0.0001", 0.1, "bleu")
    plain, plain_lm = config_from("plain"), config_from("plain", model="lm")
    assert (plain.free_bits, plain.lr, plain.skip, plain.bow, plain.feed_z, plain.select, plain.ema) == \
        (0.5, 2e-3, False, 0.0, True, "elbo", 0.0)
    assert default.ema == 0.999 and config_from("bowman2015").ema == 0.0
    assert (plain.hidden, plain.enc_hidden, default.hidden, default.enc_hidden) == (191, 0, 192, 96)
    changed = ("free_bits", "lr", "skip", "bow", "feed_z", "select", "ema", "hidden", "enc_hidden", "preset")
    assert {**vars(plain), **{k: getattr(default, k) for k in changed}} == vars(default)
    check_config(plain_lm)  # the earlier defaults are a language model's too: no term that reads z
