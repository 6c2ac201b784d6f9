"""--aggressive (He et al. 2019): encoder-only steps until their loss stops falling, a decoder-only
step after them, the phase ended by the first validation whose I(x; z) does not rise."""

import csv
from types import SimpleNamespace

import pyro
import pytest
import torch

from pyro_svae.data.corpus import gather
from pyro_svae.errors import SVAEError
from pyro_svae.training import aggressive as aggressive_module
from pyro_svae.training.aggressive import CHECK_EVERY, AggressiveEncoder
from pyro_svae.training.family import SentenceFamily
from pyro_svae.training.optim import GlobalClipAdam, make_loss
from pyro_svae.training.run import train
from pyro_svae.training.step import DeviceSVI
from pyro_svae.training.rundir import load_corpus

from conftest import quiet, tiny_config


class _Batch:
    def __init__(self, tokens):
        self.tokens = tokens

    def num_tokens(self):
        return self.tokens


class _ScriptedSVI:
    """An SVI whose steps return the losses of a script (per token: every batch has 10 tokens)."""

    def __init__(self, per_token):
        self.per_token, self.steps, self.optim = list(per_token), 0, GlobalClipAdam(1e-3, 0.0)

    def step(self, batch, **kwargs):
        self.steps += 1
        return 10 * self.per_token[self.steps - 1]


def _scripted(per_token, max_steps):
    encoder = AggressiveEncoder.__new__(AggressiveEncoder)
    encoder.max_steps, encoder.order, encoder.decoder = max_steps, (0, [[0]]), []
    svi = _ScriptedSVI(per_token)
    encoder.svae = SimpleNamespace(device="cpu")
    taken = encoder.encoder_steps(svi, lambda split, at, device: _Batch(10), None,
                                   SimpleNamespace(batch_size=1, seed=0), 0)
    return taken, svi.steps


def test_encoder_steps_stop_when_a_window_of_losses_stops_falling():
    # windows of 10 steps: means 5.0, 4.0, 4.5 -> the third is no lower than the second: stop at 30
    script = [5.0] * CHECK_EVERY + [4.0] * CHECK_EVERY + [4.5] * CHECK_EVERY + [1.0] * 100
    assert _scripted(script, 100) == (30, 30)
    # equal means stop too (no longer falling); a falling loss runs to the limit
    assert _scripted([3.0] * 100, 100) == (20, 20)
    assert _scripted([100.0 - i for i in range(100)], 45) == (45, 45)


@pytest.fixture()
def trained_pieces(corpus, tmp_path):
    """A tiny sentence VAE, its SVI and the training split, after one ordinary step."""
    c = tiny_config(corpus, max_steps=1, aggressive=20)
    train(c, str(tmp_path / "run"), log=quiet, progress=False)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    from pyro_svae.data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(str(tmp_path / "run"))
    family = SentenceFamily(c, tokenizer, torch.device("cpu"))
    family.start(1)
    optim = GlobalClipAdam(1e-2, 5.0)
    svi = DeviceSVI(family.model, family.guide, optim, make_loss(c))
    split = load_corpus(str(tmp_path / "run"))["train"]
    return family, svi, split


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(a, p) for a, p in zip(before, params)]


def test_encoder_steps_move_the_encoder_alone_and_the_step_after_them_the_decoder_alone(trained_pieces):
    family, svi, split = trained_pieces
    agg = AggressiveEncoder(family.svae, 20)
    names = {id(p): n for n, p in family.svae.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in agg.encoder} == {"encoder", "posterior"}
    assert {names[id(p)].split(".")[0] for p in agg.decoder} >= {"decoder"}
    assert len(agg.encoder) + len(agg.decoder) == len(list(family.svae.parameters()))
    kwargs = family.step_kwargs(0, len(split))
    batch_of = lambda s, at, device="cpu": gather(s, at)  # noqa: E731
    svi.step(batch_of(split, torch.arange(8)), **kwargs)  # SVI and Adam see every parameter once
    enc, dec = _snapshot(agg.encoder), _snapshot(agg.decoder)
    taken = agg.encoder_steps(svi, batch_of, split, SimpleNamespace(batch_size=8, seed=0), 0, **kwargs)
    assert 10 <= taken <= 20 and svi.optim.frozen == ()
    assert all(_changed(enc, agg.encoder)) and not any(_changed(dec, agg.decoder))
    enc, dec = _snapshot(agg.encoder), _snapshot(agg.decoder)
    with agg.frozen(svi.optim, agg.encoder):
        svi.step(batch_of(split, torch.arange(8)), **kwargs)
    assert not any(_changed(enc, agg.encoder)) and any(_changed(dec, agg.decoder))


def test_the_phase_ends_at_the_first_validation_whose_mutual_information_does_not_rise(corpus, tmp_path, monkeypatch):
    script = iter([1.0, 2.0, 1.5, 3.0, 4.0])
    monkeypatch.setattr(AggressiveEncoder, "mutual_information", lambda self, split, max_len, seed: next(script))
    calls = []
    steps = AggressiveEncoder.encoder_steps

    def counted(self, svi, *args, **kwargs):
        calls.append(1)
        return steps(self, svi, *args, **kwargs)

    monkeypatch.setattr(AggressiveEncoder, "encoder_steps", counted)
    lines = []
    summary = train(tiny_config(corpus, max_steps=25, eval_every=5, aggressive=12), str(tmp_path / "run"),
                    log=lines.append, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [float(r["val_mi"]) for r in rows] == [1.0, 2.0, 1.5, 3.0, 4.0]
    assert len(calls) == 15  # steps 1-15 are aggressive; the validation at step 15 ends the phase
    ended = [line for line in lines if "aggressive encoder updates end" in line]
    assert len(ended) == 1 and ended[0].startswith("step 15: ") and "(I(x;z) 1.500, before 2.000)" in ended[0]
    assert summary["step"] == 25


def test_an_aggressive_run_resumes_exactly(corpus, tmp_path):
    options = dict(dropout=0.2, word_keep=0.6, eval_every=6, aggressive=15)
    whole = train(tiny_config(corpus, max_steps=24, **options), str(tmp_path / "a"), log=quiet, progress=False)
    first = train(tiny_config(corpus, max_steps=9, **options), str(tmp_path / "b"), log=quiet, progress=False)
    rest = train(out_dir=str(tmp_path / "b"), resume=True, overrides={"max_steps": 24}, log=quiet, progress=False)
    assert first["losses"] + rest["losses"] == whole["losses"]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    same = lambda position: {k: v for k, v in position.items() if k != "minutes"}  # noqa: E731
    assert same(a["position"]) == same(b["position"]) and a["position"]["encoder_steps"] > 24
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("options, message", [
    (dict(model="lm"), "--aggressive trains the sentence VAE's encoder: not with --model lm"),
    (dict(guide="delta"), "--aggressive needs a Gaussian q(z|x) whose mutual information with x ends its phase: "
                          "not the delta guide"),
    (dict(guide="hier-meanfield", prior="hier"), "not the hier-meanfield guide"),
])
def test_aggressive_refuses_what_has_no_single_gaussian_encoder(corpus, tmp_path, options, message):
    with pytest.raises(SVAEError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        train(tiny_config(corpus, max_steps=2, aggressive=5, **options), str(tmp_path / "run"), log=quiet,
              progress=False)


def test_mutual_information_reads_the_first_validation_sentences(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(aggressive_module, "MI_SENTENCES", 7)
    seen = []
    monkeypatch.setattr(aggressive_module, "mutual_information",
                        lambda dists, draws: seen.append(sum(d.batch_shape[0] for d in dists)) or 0.5)
    train(tiny_config(corpus, max_steps=4, eval_every=4, aggressive=3), str(tmp_path / "run"), log=quiet,
          progress=False)
    assert seen == [7]
