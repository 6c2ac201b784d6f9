"""Training: SVI with KL annealing and word dropout, validation, early stopping, checkpoints.

``train(TrainConfig(...), out_dir)`` starts a run; ``train(..., resume=True)`` continues one
exactly where its checkpoint left it (same batches, same random draws)."""

import contextlib
import csv
import dataclasses
import datetime
import io
import math
import os
import platform
import shutil
import signal
import threading
import time

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import PyroOptim
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import atomic_save, atomic_write_bytes, load_checkpoint, remove_temporaries
from .corpus import batch_order, gather, split_files
from .devices import check_amp, forked_rng, resolve_device
from .discrete import estimator, parse_mixture, parse_tau
from .distributed import World, join, leave
from .errors import SVAEError
from .evaluation import latent_kl, validate
from .guides import guide_class, make_guide
from .model import BETA_FLOOR, ModelConfig, SentenceVAE
from .objectives import EnumELBO, FreeBitsELBO, ImportanceWeightedELBO, ScoreFunctionELBO
from .rundir import (BEST, CHECKPOINT, CONFIG, METRICS, load_corpus, model_config, read_config,
                     restore_model, write_config, writer_lock)
from .schedules import parse_schedule
from .store import StoreOptions, is_store, load_store, prepare_store, read_store_info
from .tokenizers import load_tokenizer, vocab_hash


@dataclasses.dataclass
class TrainConfig:
    # data and tokenizer
    data: str = ""
    tokenizer: str = "word"  # word | spm
    vocab_size: int = 10000  # word: the most frequent words (specials included); spm: pieces
    min_count: int = 1
    max_len: int = 60  # tokens per sentence, </s> not counted
    too_long: str = "drop"  # drop | truncate
    # model: the defaults are ModelConfig's (model.py documents them)
    model: str = "vae"  # vae | lm (the decoder alone: the language-model baseline)
    emb_dim: int = ModelConfig.emb_dim
    hidden: int = ModelConfig.hidden
    z_dim: int = 32  # Bowman's 13 in ModelConfig; a floor of 0.5 nats on each of 32 keeps ~16 nats
    enc_hidden: int = ModelConfig.enc_hidden
    enc_layers: int = ModelConfig.enc_layers
    dec_layers: int = ModelConfig.dec_layers
    bidirectional: bool = True  # the encoder reads both ways
    feed_z: bool = True  # z also enters the decoder at every step, not only its initial state
    tie: bool = ModelConfig.tie
    dropout: float = 0.2  # on embeddings and LSTM outputs
    guide: str = ModelConfig.guide
    prior: str = ModelConfig.prior  # standard | hier | mixture:K
    latent: str = ModelConfig.latent  # gaussian | categorical:M,K
    discrete: str = ModelConfig.discrete  # auto | enum | concrete | reinforce (a discrete latent's estimator)
    tau: str = "1.0,0.5,2000"  # concrete: temperature START,END,STEPS (exponential decay)
    straight_through: bool = ModelConfig.straight_through
    # objective
    elbo: str = "trace"  # trace (Trace_ELBO) | meanfield (TraceMeanField_ELBO, analytic KL)
    kl_schedule: str = "linear:0,2000"  # beta reaches 1 after 2,000 steps
    word_keep: float = 0.75
    skip: bool = False  # z adds a linear term to the decoder's logits at every step
    bow: float = 0.0  # weight of a bag-of-words prediction from z in training (Zhao et al. 2017; 0: off)
    free_bits: float = 0.5  # KL floor per latent dimension, nats (0: off); the total for non-diag guides
    iw_particles: int = 1  # K > 1: train on, and select by, the K-sample importance-weighted bound
    pretrain_steps: int = 0  # first train as an autoencoder (beta ~ 0), then reset the decoder
    init_decoder: str = ""  # a run (e.g. the LM) whose best decoder this one starts from
    init_from: str = ""  # a run whose best weights (all of them) this one starts from
    # optimization and budget
    batch_size: int = 32
    lr: float = 2e-3
    lr_decay: float = 1.0  # multiply the learning rate by this after a validation without improvement
    clip_norm: float = 5.0
    max_epochs: int = 0  # 0: no limit
    max_steps: int = 0
    max_minutes: float = 0.0
    eval_every: int = 500
    patience: int = 4  # evaluations without a better validation ELBO before stopping; 0: never
    seed: int = 0
    device: str = "auto"
    amp: str = "off"  # off | bf16 (autocast: CUDA tensor cores, AMX on recent Xeon CPUs)
    preset: str = "default"  # the named set of defaults the run started from (PRESETS)


# Named sets of defaults: a user's own options override them. "default" is TrainConfig's
# (chosen so that a VAE uses its latent without flags); "bowman2015" is the original recipe
# (Bowman et al. 2015: no KL floor, sigmoid annealing, no early stopping), which collapses.
PRESETS = {
    "default": {},
    "bowman2015": dict(emb_dim=353, hidden=191, z_dim=13, dropout=0.0, free_bits=0.0, word_keep=0.75,
                       kl_schedule="logistic:0.0025,2500", batch_size=32, lr=1e-3, patience=0, feed_z=False,
                       bidirectional=False),
}


def config_from(preset="default", **options):
    """A TrainConfig: TrainConfig's defaults, then the preset's, then ``options``."""
    if preset not in PRESETS:
        raise SVAEError(f"--preset {preset!r}: use one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset], **options, "preset": preset})


COLLAPSED_KL = 0.5  # validation KL (nats per sentence) under which training warns of collapse

# Options a resumed run may change; every other one is fixed by the run.
RESUMABLE = {"max_epochs", "max_steps", "max_minutes", "eval_every", "patience", "device", "amp"}
CHOICES = {"tokenizer": ("word", "spm"), "too_long": ("drop", "truncate"), "model": ("vae", "lm"),
           "elbo": ("trace", "meanfield"), "amp": ("off", "bf16"),
           "preset": tuple(PRESETS)}

# Each float option's range and how its error states it (every one must also be finite).
FLOAT_RANGES = {
    "lr": (lambda v: v > 0, "a positive number"),
    "lr_decay": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "word_keep": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "clip_norm": (lambda v: v >= 0, ">= 0 (0: off)"),
    "free_bits": (lambda v: v >= 0, ">= 0 (0: off)"),
    "bow": (lambda v: v >= 0, ">= 0 (0: off)"),
    "max_minutes": (lambda v: v >= 0, ">= 0 (0: no limit)"),
}


def make_adam(params, lr):
    """torch's fused Adam (one pass over memory per step) where this build has it."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


class GlobalClipAdam(PyroOptim):
    """Adam with the gradients of each step clipped by their global norm. Unlike PyroOptim's
    one optimizer per parameter, it is one torch Adam over every parameter the ELBO touches
    (fixed in name order at the first step), so a step is one fused update. SVI takes it as any
    PyroOptim."""

    def __init__(self, lr, clip_norm):
        super().__init__(torch.optim.Adam, {"lr": lr})
        self.lr, self.clip_norm = lr, clip_norm
        self.adam, self.params, self.pending = None, None, None
        self.sync = None  # called with the parameters before each step (data parallel: sums gradients)

    def __call__(self, params, *args, **kwargs):
        if self.adam is None:
            self.params = sorted(params, key=pyro.get_param_store().param_name)
            self.clipped = [p for p in self.params if not _is_baseline(pyro.get_param_store().param_name(p))]
            self.adam = make_adam(self.params, self.lr)
            if self.pending is not None:
                self.adam.load_state_dict(self.pending)
        if self.sync is not None:
            self.sync(self.params)
        if self.clip_norm > 0:  # a score-function baseline regresses costs in the thousands: not clipped
            torch.nn.utils.clip_grad_norm_(self.clipped, self.clip_norm)
        self.adam.step()
        for p in self.params:  # fresh gradients next step: nothing for SVI's zero_grads to fill
            p.grad = None

    def get_state(self):
        return self.adam.state_dict() if self.adam is not None else self.pending

    def set_state(self, state):
        self.pending = state

    def set_lr(self, lr):
        self.lr = lr
        for group in (self.adam.param_groups if self.adam is not None else []):
            group["lr"] = lr
        if self.pending is not None:
            for group in self.pending["param_groups"]:
                group["lr"] = lr

    def reset(self, params):
        """Forget the Adam moments of ``params`` (their values were re-initialized)."""
        for p in params:
            if self.adam is not None:
                self.adam.state.pop(p, None)


def _is_baseline(name):
    """A score-function baseline's parameter ("posterior$$$baseline.net.0.weight")."""
    return "baseline" in name.rpartition("$$$")[2].split(".")


def make_loss(c):
    """The training objective of config ``c``: the IW bound (K > 1), free bits, or one of Pyro's ELBOs."""
    if c.model == "lm":
        return TraceMeanField_ELBO() if c.elbo == "meanfield" else Trace_ELBO()
    discrete = estimator(c.prior, c.latent, c.discrete)
    if discrete == "enum":
        return EnumELBO(c.free_bits)
    if discrete == "reinforce":
        return ScoreFunctionELBO(c.free_bits)
    if discrete == "concrete":
        return FreeBitsELBO(c.free_bits)  # analytic (exact) categorical KL, relaxed draws
    if c.iw_particles > 1:
        return ImportanceWeightedELBO(c.iw_particles, c.free_bits)
    if c.free_bits > 0:
        return FreeBitsELBO(c.free_bits)
    return TraceMeanField_ELBO() if c.elbo == "meanfield" else Trace_ELBO()


def check_config(c):
    """Every option value, before any work: a one-line SVAEError naming the first bad one."""
    for name, allowed in CHOICES.items():
        if getattr(c, name) not in allowed:
            raise SVAEError(f"{_flag(name)} {getattr(c, name)!r}: use one of {', '.join(allowed)}")
    for name in ("batch_size", "eval_every", "emb_dim", "hidden", "max_len", "vocab_size", "min_count",
                 "enc_layers", "dec_layers", "iw_particles"):
        if getattr(c, name) < 1:
            raise SVAEError(f"{_flag(name)} {getattr(c, name)}: must be at least 1")
    for name in ("max_epochs", "max_steps", "patience", "pretrain_steps", "enc_hidden"):
        if getattr(c, name) < 0:
            raise SVAEError(f"{_flag(name)} {getattr(c, name)}: must be >= 0")
    for name, (allowed, what) in FLOAT_RANGES.items():
        value = getattr(c, name)
        if not (math.isfinite(value) and allowed(value)):
            raise SVAEError(f"{_flag(name)} {value}: must be {what}")
    if not 0 <= c.seed < 2**32:
        raise SVAEError(f"--seed {c.seed}: must lie in [0, 2^32)")
    for name in ("init_decoder", "init_from"):
        run = getattr(c, name)
        if run and not os.path.isfile(os.path.join(run, BEST)):
            raise SVAEError(f"{_flag(name)} {run}: not a trained run (no {BEST})")
    if c.init_decoder and c.init_from:
        raise SVAEError("--init-decoder and --init-from: give one")
    if c.iw_particles > 1 and c.model == "lm":
        raise SVAEError("--iw-particles > 1 is for a VAE (the LM's likelihood is exact)")
    if c.bow > 0 and c.model == "lm":
        raise SVAEError("--bow predicts words from z: it is for a VAE, not --model lm")
    if c.model == "vae" and c.z_dim <= 0:
        raise SVAEError("--z-dim must be positive for a VAE (use --model lm for no latent)")
    if c.model == "vae":
        make_guide(c.guide, 4, c.z_dim)  # a valid family and argument
        if c.prior not in ("standard", "hier") and not parse_mixture(c.prior):
            raise SVAEError(f"--prior {c.prior!r}: use one of standard, hier, mixture:K")
        discrete = estimator(c.prior, c.latent, c.discrete)  # a valid latent and estimator
        wanted = guide_class(c.guide).prior
        if wanted != ("standard" if parse_mixture(c.prior) else c.prior):
            raise SVAEError(f"guide {c.guide!r} goes with --prior {wanted}, not {c.prior!r}")
        if c.latent != "gaussian" and c.guide != "diag":
            raise SVAEError(f"--latent {c.latent} has its own q(z|x); leave --guide at diag")
        if discrete and c.iw_particles > 1:
            raise SVAEError("--iw-particles > 1 is for a Gaussian latent; a discrete one trains on the ELBO")
        if discrete == "concrete":
            parse_tau(c.tau)
    parse_schedule(c.kl_schedule, c.max_steps or c.max_epochs or None)


def _flag(name):
    return "--" + name.replace("_", "-")


STORE_OPTIONS = tuple(StoreOptions.__dataclass_fields__)  # fixed by a prepared store


def store_options(c):
    return StoreOptions(**{k: getattr(c, k) for k in STORE_OPTIONS})


def check_store_options(data, given):
    """Options given with ``--data STORE`` must agree with the store's (they are its tokenizer's)."""
    if not is_store(data):
        return
    stored = read_store_info(data)["options"]
    for key in STORE_OPTIONS:
        if key in given and given[key] != stored[key]:
            raise SVAEError(f"{_flag(key)} {given[key]}: the store {data} was prepared with {stored[key]}; "
                            f"prepare another store to change it")


def prepare_run(c, out_dir, log, progress=True):
    """The run's corpus: a prepared store (``--data STORE``, shared, not copied: its tokenizer
    options become the run's), or raw text encoded into a store inside the run directory.
    Writes the tokenizer and config.json. -> (config, tokenizer, {split: MappedSplit})."""
    if is_store(c.data):
        tokenizer, splits, info = load_store(c.data)
        c = dataclasses.replace(c, **info["options"])
        os.makedirs(out_dir, exist_ok=True)
        for name in ("tokenizer.json", getattr(tokenizer, "model_path", None)):
            if name:
                shutil.copyfile(os.path.join(c.data, os.path.basename(name)), os.path.join(out_dir, os.path.basename(name)))
        log(f"data: the token store {c.data} ({info['options']['tokenizer']}, {len(tokenizer)} ids; "
            + ", ".join(f"{k} {v['sentences']} sentences" for k, v in info["splits"].items()) + ")")
        store = os.path.abspath(c.data)
    else:
        tokenizer, splits, info = prepare_store(c.data, out_dir, store_options(c), log=log, progress=progress)
        store = ""
    write_config(out_dir, {
        "train": dataclasses.asdict(c), "vocab_size": len(tokenizer), "data_sha256": info["data_sha256"],
        "store": store, "counts": info["splits"], "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {"pyro_svae": __version__, "pyro": pyro.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    })
    return c, tokenizer, splits


def resumed_config(out_dir, overrides):
    """The run's TrainConfig with the allowed overrides applied; an error for any other change."""
    stored = read_config(out_dir)["train"]
    for key, value in overrides.items():
        if key not in RESUMABLE and value != stored.get(key):
            raise SVAEError(f"{_flag(key)} {value} differs from the run's {stored.get(key)}; "
                            f"a resumed run keeps its data and model settings")
    return TrainConfig(**{**stored, **{k: v for k, v in overrides.items() if k in RESUMABLE}})


class Trainer:
    """One process's training loop. With several processes (``world``), each computes the
    gradient on its share of every global batch, the gradients are summed before the step, and
    process 0 alone validates the reduced metrics into files, logs and shows progress."""

    def __init__(self, c, out_dir, tokenizer, splits, log=print, progress=True, world=None, device=None):
        self.world = world or World()
        self.c, self.out_dir, self.progress = c, out_dir, progress and self.world.main
        self.log = log if self.world.main else (lambda *a: None)
        self.tokenizer, self.splits = tokenizer, splits
        self.device = device if device is not None else resolve_device(c.device)
        check_amp(c.amp, self.device)
        pyro.clear_param_store()
        pyro.set_rng_seed(c.seed)
        self.svae = SentenceVAE(model_config({"train": dataclasses.asdict(c)}, len(tokenizer))).to(self.device)
        self.world.broadcast_params(self.svae)
        if self.world.rank:  # its own draws (word dropout, z): process 0 keeps one process's stream
            torch.manual_seed(c.seed + self.world.rank * 2**32)
        self.optim = GlobalClipAdam(c.lr, c.clip_norm)
        loss = make_loss(c)
        # Pyro's ELBOs bring their own loss_and_grads; ours backpropagates without retaining the graph
        self.svi = SVI(self.svae.model, self.svae.guide, self.optim, loss,
                       loss_and_grads=getattr(loss, "loss_and_grads", None))
        self.batches_per_epoch = math.ceil(len(splits["train"]) / c.batch_size)
        self.total_steps = c.max_steps or (c.max_epochs * self.batches_per_epoch) or None
        self.schedule = parse_schedule(c.kl_schedule, self.total_steps)
        self.discrete = self.svae.estimator or None
        self.tau = parse_tau(c.tau) if self.discrete == "concrete" else (lambda step: None)
        self.last_metrics, self.warned, self.checkpointed = None, False, False
        self.tokens, self.eval_seconds = 0, 0.0  # real tokens trained on (all processes); time validating
        self.pos = {"step": 0, "epoch": 0, "batch": 0, "best_elbo": -math.inf, "bad_evals": 0, "minutes": 0.0,
                    "lr": c.lr}

    # -- checkpoints ------------------------------------------------------------------------
    def state(self):
        """Everything a resume needs: weights, optimizer, position, every process's RNG (a
        collective with several processes)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world.distributed:  # every process's generator: resuming with as many is exact
            rng["ranks"] = self.world.gather({k: v.cpu() for k, v in rng.items()})
        return {"model": self.svae.state_dict(), "position": dict(self.pos), "rng": rng,
                "processes": self.world.size, "vocab_hash": vocab_hash(self.tokenizer),
                "config": dataclasses.asdict(self.c), "optim": self.optim.get_state()}

    def restore(self, path):
        hint = (f"; the run cannot resume, but its {BEST} can still be read (--checkpoint best) or "
                f"trained on (train --init-from {self.out_dir})"
                if os.path.isfile(os.path.join(self.out_dir, BEST)) else "")
        state = load_checkpoint(path, self.device, hint)
        restore_model(self.svae, state, self.tokenizer, path)
        self.optim.set_state(state["optim"])
        self.pos.update(state["position"])
        self.optim.set_lr(self.pos["lr"])
        self.checkpointed = True
        processes, rng = state.get("processes", 1), state["rng"]
        if processes != self.world.size:
            self.log(f"{path}: trained by {processes} process(es), continued by {self.world.size}: the "
                     "batches and weights carry on, the random draws start afresh (not bit-exact)")
            torch.manual_seed(self.c.seed + self.world.rank * 2**32 + self.pos["step"] * 2**40)
            return
        rng = rng["ranks"][self.world.rank] if self.world.distributed else rng
        torch.set_rng_state(rng["torch"].cpu())
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)

    # -- the loop ---------------------------------------------------------------------------
    def beta(self, step):
        """The KL weight: ~0 while pretraining as an autoencoder, then the schedule from there."""
        c = self.c
        return BETA_FLOOR if step < c.pretrain_steps else self.schedule(step - c.pretrain_steps)

    def init_decoder(self, run_dir):
        """Start from the decoder of ``run_dir``'s best.pt (same vocabulary and sizes), with the
        layers from z (initial state, skip) at zero: at step 0 the VAE's likelihood is that model's."""
        path = os.path.join(run_dir, BEST)
        state = load_checkpoint(path, self.device)
        if state.get("vocab_hash") != vocab_hash(self.tokenizer):
            raise SVAEError(f"--init-decoder {run_dir}: trained on another vocabulary than this run's")
        decoder = {k[len("decoder."):]: v for k, v in state["model"].items() if k.startswith("decoder.")}
        try:
            missing, unexpected = self.svae.decoder.load_state_dict(decoder, strict=False)
        except RuntimeError:
            raise SVAEError(f"--init-decoder {run_dir}: its decoder has other sizes than this run's") from None
        if unexpected or any(not k.startswith(("init.", "skip.")) for k in missing):  # both start at zero
            raise SVAEError(f"--init-decoder {run_dir}: its decoder has another architecture than this run's")
        if self.svae.decoder.init is not None:
            with torch.no_grad():
                self.svae.decoder.init.weight.zero_()
                self.svae.decoder.init.bias.zero_()
        self.log(f"decoder initialized from {path}")

    def init_from(self, run_dir):
        """Start from every weight of ``run_dir``'s best.pt (same vocabulary and architecture), with a
        fresh optimizer: to fine-tune a trained model with another objective or learning rate."""
        path = os.path.join(run_dir, BEST)
        restore_model(self.svae, load_checkpoint(path, self.device), self.tokenizer, f"--init-from {run_dir}")
        self.log(f"weights initialized from {path}")

    def reset_decoder(self):
        """End of autoencoder pretraining (Li et al. 2019): keep the encoder, start a new decoder."""
        for module in self.svae.decoder.modules():
            if module is not self.svae.decoder and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self.optim.reset(self.svae.decoder.parameters())  # and its Adam state
        self.log(f"step {self.pos['step']}: autoencoder pretraining done; decoder re-initialized")

    def time_up(self, started):
        return bool(self.c.max_minutes) and self.pos["minutes"] + (time.time() - started) / 60 >= self.c.max_minutes

    def stop_reason(self, time_up):
        """Why to stop now, or None. ``time_up``: the time budget is spent (on any process)."""
        c, p = self.c, self.pos
        if c.max_steps and p["step"] >= c.max_steps:
            return "max-steps"
        if c.max_epochs and p["epoch"] >= c.max_epochs:
            return "max-epochs"
        if time_up:
            return "max-minutes"
        if c.patience and p["bad_evals"] >= c.patience:
            return "early stopping"
        return None

    def run(self):
        """Train until a budget, early stopping or Ctrl-C; returns a summary with every step's loss."""
        c, p, train, world = self.c, self.pos, self.splits["train"], self.world
        size = len(train)
        interrupted = []
        restore_signals = _catch_stop_signals(interrupted)
        started, losses, last_eval = time.time(), [], p["step"]
        bar = tqdm(total=self.total_steps, initial=p["step"], unit="step", disable=not self.progress,
                   dynamic_ncols=True, smoothing=0.05)
        window = [time.time(), 0]  # tokens/s since the last display
        time_up, stop = (x > 0 for x in world.sum([self.time_up(started), bool(interrupted)], self.device))
        reason = self.stop_reason(time_up)
        self.svae.train()
        try:
            while reason is None and not stop:
                order = batch_order(train, c.batch_size, c.seed, p["epoch"])
                while p["batch"] < len(order):
                    positions = order[p["batch"]]
                    if len(positions) < world.size:  # an epoch's last batch, too small to share: skipped
                        p["batch"] += 1
                        continue
                    local = world.shard(positions)
                    weight = len(local) / len(positions)  # this process's part of the global estimate
                    self.optim.sync = lambda params: world.sum_grads(params, weight)
                    batch = gather(train, local).to(self.device)
                    if c.pretrain_steps and p["step"] == c.pretrain_steps:
                        self.reset_decoder()
                    beta = self.beta(p["step"])
                    # Pyro's validation checks shapes and supports of model and guide (our code,
                    # tested); off, a step does less Python work. A bad step still stops the run:
                    with torch.autocast(self.device.type, torch.bfloat16, enabled=c.amp == "bf16"), \
                            pyro.validation_enabled(False):
                        loss = self.svi.step(batch, size=size, beta=beta, word_keep=c.word_keep,
                                             discrete=self.discrete, temperature=self.tau(p["step"]))
                    # the global batch's loss, and whether any process was stopped or ran out of time
                    loss, tokens, time_up, stop = world.sum(
                        [loss * weight, batch.num_tokens(), self.time_up(started), bool(interrupted)], self.device)
                    time_up, stop = time_up > 0, stop > 0
                    if not math.isfinite(loss):
                        if not world.main:
                            raise SystemExit(1)  # process 0 says why
                        raise SVAEError(f"the loss became {loss} at step {p['step'] + 1} (the run's last "
                                        "checkpoint is intact); train again with a lower --lr or --clip-norm")
                    losses.append(loss)
                    p["step"] += 1
                    p["batch"] += 1
                    window[1] += tokens
                    self.tokens += tokens
                    bar.update(1)
                    if self.progress and (p["step"] % 20 == 0 or p["step"] == 1):
                        self._show(bar, batch, loss / size, beta, window, started)
                    if p["step"] % c.eval_every == 0:
                        self.evaluate(started, losses[last_eval - p["step"]:], beta)
                        last_eval = p["step"]
                        time_up = world.sum([self.time_up(started)], self.device)[0] > 0  # validating took time
                    reason = self.stop_reason(time_up)
                    # one process stops at once; several learn of a signal at the next step's sum
                    stop = stop or (bool(interrupted) and not world.distributed)
                    if reason or stop:
                        break
                else:
                    p["epoch"] += 1
                    p["batch"] = 0
                    reason = self.stop_reason(time_up)
        finally:
            restore_signals()
            bar.close()
        train_seconds = time.time() - started - self.eval_seconds  # the steps alone
        if stop:
            reason = "interrupted"
        if p["step"] != last_eval or not self.checkpointed:
            self.evaluate(started, losses[last_eval - p["step"]:] if p["step"] > last_eval else [],
                          self.beta(max(p["step"] - 1, 0)))
        return {"run": self.out_dir, "stopped": reason, "step": p["step"], "epoch": p["epoch"],
                "best_elbo": p["best_elbo"], "losses": losses, "last": self.last_metrics,
                "tokens": int(self.tokens), "train_seconds": train_seconds, "processes": world.size}

    def _show(self, bar, batch, loss, beta, window, started):
        with torch.no_grad(), forked_rng(self.device):
            kl = float(latent_kl(self.svae, batch).mean()) if self.svae.z_dim else 0.0
        now = time.time()
        post = {"loss": f"{loss:.2f}", "kl": f"{kl:.2f}", "beta": f"{max(beta, BETA_FLOOR):.3f}",
                "tok/s": f"{window[1] / max(now - window[0], 1e-9):.0f}"}
        if self.c.max_minutes and not self.total_steps:
            left = self.c.max_minutes - self.pos["minutes"] - (now - started) / 60
            post["eta"] = f"{max(left, 0):.1f}m"
        bar.set_postfix(post, refresh=False)
        window[0], window[1] = now, 0

    def evaluate(self, started, recent_losses, beta):
        began = time.time()
        try:
            return self._evaluate(started, recent_losses, beta)
        finally:
            self.eval_seconds += time.time() - began

    def _evaluate(self, started, recent_losses, beta):
        p = self.pos
        k = self.c.iw_particles
        m = validate(self.svae, self.splits["valid"], max(self.c.batch_size, 64), seed=self.c.seed,
                     iw_samples=k if k > 1 else 0, world=self.world)
        minutes = p["minutes"] + (time.time() - started) / 60
        score = m["iw"] if k > 1 else m["elbo"]  # the bound that training maximizes selects best.pt
        improved = score > p["best_elbo"]
        if improved:
            p["best_elbo"], p["bad_evals"] = score, 0
        else:
            p["bad_evals"] += 1
            if self.c.lr_decay != 1.0:
                p["lr"] *= self.c.lr_decay
                self.optim.set_lr(p["lr"])
        train_loss = sum(recent_losses) / len(recent_losses) / len(self.splits["train"]) if recent_losses else float("nan")
        row = {"step": p["step"], "epoch": p["epoch"], "beta": round(max(beta, BETA_FLOOR), 6),
               "train_loss": round(train_loss, 4), "val_elbo": round(m["elbo"], 4),
               "val_rec": round(m["rec"], 4), "val_kl": round(m["kl"], 4),
               "val_ppl_bound": round(m["ppl_bound"], 3), "lr": p["lr"], "minutes": round(minutes, 3)}
        if k > 1:
            row["val_iw"] = round(m["iw"], 4)
        saved_minutes, p["minutes"] = p["minutes"], minutes
        state = self.state()  # on every process (a collective); process 0 writes
        p["minutes"] = saved_minutes
        if self.world.main:
            _append_metrics(os.path.join(self.out_dir, METRICS), row)
            if improved:  # best.pt: the same state without the optimizer's
                atomic_save({k: v for k, v in state.items() if k != "optim"}, os.path.join(self.out_dir, BEST))
            atomic_save(state, os.path.join(self.out_dir, CHECKPOINT))
        self.checkpointed = True
        self.last_metrics = row
        with tqdm.external_write_mode():
            iw = f", IW bound (K={k}) {m['iw']:.2f}" if k > 1 else ""
            self.log(f"step {p['step']}: val ELBO {m['elbo']:.2f} (rec {m['rec']:.2f}, KL {m['kl']:.2f}), "
                     f"PPL <= {m['ppl_bound']:.1f}{iw}" + (" *" if improved else ""))
            if self.svae.z_dim and m["kl"] < COLLAPSED_KL and not self.warned:
                self.warned = True
                self.log(f"warning: validation KL {m['kl']:.2f} nats per sentence: the posterior is collapsing "
                         "(z is ignored); remedies: --free-bits 0.25, --word-keep 0.5, "
                         "--kl-schedule cyclical:4,0.5 (README: Posterior collapse)")
        return row


def _append_metrics(path, row):
    new = not os.path.isfile(path)
    try:
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise SVAEError(f"{path}: could not be written ({e.strerror or e})") from None


def _truncate_metrics(path, step):
    """Drop rows written after ``step`` (they belong to a run that continued past the checkpoint)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and any(int(r["step"]) > step for r in rows):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= step)
        atomic_write_bytes(path, out.getvalue().encode())


def _catch_stop_signals(flag):
    """First Ctrl-C (or SIGTERM, which torchrun sends its workers): finish the current step,
    save, stop. A second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        flag.append(True)
        for sig, old in previous.items():
            signal.signal(sig, old)

    for sig in previous:
        signal.signal(sig, handler)
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]


def train(config=None, out_dir=None, resume=False, overrides=None, log=print, progress=True):
    """Start a run in ``out_dir`` from ``config``, or resume it (``resume=True``; ``overrides``
    may change the budget). Returns the summary of ``Trainer.run``. The process holds the run's
    writer lock throughout (a second writer is refused).

    Under ``torchrun`` every process calls this: process 0 checks, locks and prepares the run
    while the others wait, then all train together (distributed.py)."""
    overrides = overrides or {}
    world, device = join(_requested_device(config, out_dir, resume, overrides))
    try:
        with contextlib.ExitStack() as held:
            failure = None
            if world.main:
                try:
                    _start(config, out_dir, resume, overrides, log, progress, held)
                except SVAEError as e:
                    failure = e
            if world.broadcast(str(failure) if failure else None) is not None:
                if failure:
                    raise failure
                raise SystemExit(1)  # process 0 printed why
            return _run(out_dir, resume, overrides, log, progress, world, device)
    finally:
        leave()


def _requested_device(config, out_dir, resume, overrides):
    if not resume:
        return config.device
    try:
        return overrides.get("device") or read_config(out_dir)["train"].get("device", "auto")
    except SVAEError:
        return "auto"  # process 0 reports what is wrong with the run, once


def _start(config, out_dir, resume, overrides, log, progress, held):
    """Process 0: check everything, take the writer lock (kept in ``held``), prepare a new run."""
    if not resume:
        check_config(config)
        resolve_device(config.device)
        if is_store(config.data):
            load_store(config.data)  # a readable store, before the run directory is created
        else:
            split_files(config.data)  # the corpus is there, before the run directory is created
    else:
        read_config(out_dir)  # a folder that is not a run: one line, and no lock file left in it
    held.enter_context(writer_lock(out_dir))
    removed = remove_temporaries(out_dir)
    if removed:
        log(f"{out_dir}: removed {removed} temporary file(s) left by an interrupted write")
    if resume:
        check_config(resumed_config(out_dir, overrides))
        return
    if os.path.isfile(os.path.join(out_dir, CHECKPOINT)) or os.path.isfile(os.path.join(out_dir, CONFIG)):
        raise SVAEError(f"{out_dir} already holds a run; resume it with --resume {out_dir} or pick another --out")
    prepare_run(config, out_dir, log, progress)


def _run(out_dir, resume, overrides, log, progress, world, device):
    """Every process: build the trainer from the run directory, restore or initialize, train."""
    config = resumed_config(out_dir, overrides) if resume else TrainConfig(**read_config(out_dir)["train"])
    tokenizer, splits = load_tokenizer(out_dir), load_corpus(out_dir)
    trainer = Trainer(config, out_dir, tokenizer, splits, log, progress, world, device)
    if resume:
        path = os.path.join(out_dir, CHECKPOINT)
        if os.path.isfile(path):
            trainer.restore(path)
        else:  # stopped after preparing the corpus, before the first checkpoint: start over
            trainer.log(f"{out_dir} has no {CHECKPOINT} yet; training from step 0")
        if world.main:
            _truncate_metrics(os.path.join(out_dir, METRICS), trainer.pos["step"])
        trainer.log(f"resuming {out_dir} at step {trainer.pos['step']}"
                    + (f" with {world.size} processes" if world.distributed else ""))
    else:
        if config.init_decoder:
            trainer.init_decoder(config.init_decoder)
        if config.init_from:
            trainer.init_from(config.init_from)
        if world.distributed:
            trainer.log(f"training with {world.size} processes ({torch.distributed.get_backend()}), "
                        f"{config.batch_size} sentences per step in all")
    return trainer.run()
