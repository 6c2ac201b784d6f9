"""The training loop, for any model family (family.py): SVI steps over shuffled batches, validation
and checkpoints, budgets and early stopping, and data parallelism under ``torchrun``."""

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time

import pyro
import torch
from tqdm.auto import tqdm

from ..checkpoint import atomic_save, load_checkpoint
from ..data.corpus import batch_order
from ..data.tokenizers import vocab_hash
from ..devices import check_amp, resolve_device
from ..errors import SVAEError
from ..inference.schedules import lr_factor
from ..models.documents import is_chain_prior
from ..models.labeled import is_class_prior
from ..progress import progress_bar
from .aggressive import aggressive_encoder
from .averaging import WeightAverage
from .distributed import World
from .documents import DocumentFamily, concatenated_splits, document_splits, whole_documents
from .family import SentenceFamily
from .labeled import LabeledFamily
from .logs import make_log
from .optim import GlobalClipAdam
from .rundir import BEST, CHECKPOINT, METRICS, append_metrics, read_config, restore_model
from .step import DeviceSVI, TracedLoss, compile_networks

READ_EVERY = 20  # steps between host reads of the losses, token counts and (several processes) stop flags
EMA_EVERY = 4  # steps between updates of --ema's average: a quarter of the memory traffic of every step


@dataclasses.dataclass
class Position:
    """Where a run is: what a checkpoint records beside the weights, optimizer and RNG."""
    step: int = 0
    epoch: int = 0
    batch: int = 0  # within the epoch's order
    best_elbo: float = -math.inf  # the best validation score (--select: the bound trained on, or BLEU)
    bad_evals: int = 0  # validations since the best
    minutes: float = 0.0  # of training in all, at the last checkpoint
    lr: float = 0.0
    mi: float = -math.inf  # --aggressive: I(x; z) at the last validation
    aggressive_done: bool = False  # --aggressive: its phase has ended
    encoder_steps: int = 0  # --aggressive: the encoder-only steps taken


def sentence_trainer(c, out_dir, tokenizer, splits, log=print, progress=True, world=None, device=None):
    """A Trainer of the sentence VAE (or LM) of config ``c``, initialized from ``c.seed`` in a
    cleared Pyro parameter store."""
    device = device if device is not None else resolve_device(c.device)
    pyro.clear_param_store()
    pyro.set_rng_seed(c.seed)
    if is_chain_prior(c.prior):
        family, splits = DocumentFamily(c, tokenizer, device), document_splits(splits)
    elif is_class_prior(c.prior):
        family = LabeledFamily(c, tokenizer, device, read_config(out_dir).get("labels"))
    else:
        if whole_documents(dataclasses.asdict(c)):  # the language model of whole documents
            splits = concatenated_splits(splits)
        family = SentenceFamily(c, tokenizer, device)
    return Trainer(family, c, out_dir, tokenizer, splits, log, progress, world, device)


class Trainer:
    """One process's training loop over ``family``. With several processes (``world``), each computes
    the gradient on its share of every global batch, the gradients are summed before the step, and
    process 0 alone writes the run, logs and shows progress."""

    def __init__(self, family, c, out_dir, tokenizer, splits, log=print, progress=True, world=None, device=None):
        self.world = world or World()
        self.family, self.c, self.out_dir = family, c, out_dir
        self.progress = progress and self.world.main
        self.log = log if self.world.main else (lambda *a: None)
        self.tokenizer, self.splits = tokenizer, splits
        self.device = device if device is not None else resolve_device(c.device)
        check_amp(c.amp, self.device)
        self.world.broadcast_params(family.module)
        if self.world.rank:  # its own draws (word dropout, z): process 0 keeps one process's stream
            torch.manual_seed(c.seed + self.world.rank * 2**32)
        compile_networks(family.module, c.compile)
        self.optim = GlobalClipAdam(c.lr, c.clip_norm)
        # --ema: the average takes the weights every EMA_EVERY steps (decay ** EMA_EVERY each time)
        self.average = WeightAverage(family.module, c.ema ** EMA_EVERY) if c.ema else None
        loss = family.loss()
        # Pyro's ELBOs bring their own loss_and_grads; ours backpropagates without retaining the graph
        self.svi = DeviceSVI(family.model, family.guide, self.optim, loss, traced=self.traced_loss(loss),
                             loss_and_grads=getattr(loss, "loss_and_grads", None))
        self.batches_per_epoch = math.ceil(len(splits["train"]) / c.batch_size)
        self.total_steps = c.max_steps or (c.max_epochs * self.batches_per_epoch) or None
        family.start(self.total_steps)
        self.last_metrics, self.checkpointed = None, False
        self.tokens, self.eval_seconds = 0, 0.0  # real tokens trained on (all processes); time validating
        self.pos = Position(lr=c.lr)
        self.aggressive = aggressive_encoder(c, family, self.world)
        self.experiment_log = make_log(c.log, out_dir) if self.world.main else None
        self.logged_config = False

    def traced_loss(self, loss):
        """``--compile step`` (``auto``: on CUDA): a TracedLoss of the family's differentiable loss
        where the family allows it (``traceable``) and the step runs in float32; else None (eager)."""
        mode = self.c.compile
        if mode == "auto":
            mode = "step" if self.device.type == "cuda" else "off"
        if mode != "step" or self.c.amp != "off" or not getattr(self.family, "traceable", False):
            return None
        differentiable = getattr(loss, "differentiable_loss", loss)
        model, guide = self.family.model, self.family.guide
        return TracedLoss(lambda batch, **kw: differentiable(model, guide, batch, **kw), self.family.module, self.log)

    # -- checkpoints ------------------------------------------------------------------------
    def state(self):
        """Everything a resume needs: weights, optimizer, position, every process's RNG (a
        collective with several processes)."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world.distributed:  # every process's generator: resuming with as many is exact
            rng["ranks"] = self.world.gather({k: v.cpu() for k, v in rng.items()})
        return {"model": self.family.module.state_dict(), "position": dataclasses.asdict(self.pos), "rng": rng,
                "processes": self.world.size, "vocab_hash": vocab_hash(self.tokenizer),
                "config": dataclasses.asdict(self.c), "optim": self.optim.get_state(),
                **({"ema": self.average.state()} if self.average else {})}

    def restore(self, path):
        hint = (f"; the run cannot resume, but its {BEST} can still be read (--checkpoint best) or "
                f"trained on (train --init-from {self.out_dir})"
                if os.path.isfile(os.path.join(self.out_dir, BEST)) else "")
        state = load_checkpoint(path, self.device, hint)
        restore_model(self.family.module, state, self.tokenizer, path)
        self.optim.set_state(state["optim"])
        if self.average and "ema" in state:
            self.average.load(state["ema"])
        elif self.average:  # a run that had no average: it starts from the weights now
            self.average.restart()
        self.pos = Position(**state["position"])
        self.optim.set_lr(self.pos.lr)
        self.checkpointed = True
        processes, rng = state.get("processes", 1), state["rng"]
        if processes != self.world.size:
            self.log(f"{path}: trained by {processes} process(es), continued by {self.world.size}: the "
                     "batches and weights carry on, the random draws start afresh (not bit-exact)")
            torch.manual_seed(self.c.seed + self.world.rank * 2**32 + self.pos.step * 2**40)
            return
        rng = rng["ranks"][self.world.rank] if self.world.distributed else rng
        torch.set_rng_state(rng["torch"].cpu())
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)

    def lr_now(self):
        """The learning rate of the next step: the run's (--lr, decayed by --lr-decay) times --lr-schedule's factor."""
        return self.pos.lr * lr_factor(self.c.lr_schedule, self.pos.step, self.total_steps)

    # -- stop decisions -----------------------------------------------------------------------
    def time_up(self, started):
        return bool(self.c.max_minutes) and self.pos.minutes + (time.time() - started) / 60 >= self.c.max_minutes

    def stop_reason(self, time_up):
        """Why to stop now, or None. ``time_up``: the time budget is spent (on any process)."""
        c, p = self.c, self.pos
        if c.max_steps and p.step >= c.max_steps:
            return "max-steps"
        if c.max_epochs and p.epoch >= c.max_epochs:
            return "max-epochs"
        if time_up:
            return "max-minutes"
        if c.patience and p.bad_evals >= c.patience:
            return "early stopping"
        return None

    # -- the loop ---------------------------------------------------------------------------
    def step(self, positions, size, flags):
        """One SVI step on this process's share of the global batch ``positions``; ``flags``: this
        process's [time is up, interrupted]. -> (the local batch, a tensor left on the device: the
        loss [1], or with several processes [global loss, tokens, time up, interrupted] summed in
        the step's one all-reduce)."""
        world, c = self.world, self.c
        local = world.shard(positions)
        weight = len(local) / len(positions)  # this process's part of the global estimate
        batch = self.family.batch(self.splits["train"], local, self.device)
        summed = []
        if world.distributed:
            host = torch.tensor([batch.num_tokens(), *flags], dtype=torch.float32)

            def sync(params):  # the gradients, the loss, the tokens and the flags in one collective
                loss = _as_tensor(self.svi.last_loss, self.device).reshape(1).float() * weight
                summed.append(world.sum_grads(params, weight, torch.cat([loss, _to_device(host, self.device)])))
            self.optim.sync = sync
        if c.lr_schedule != "constant":
            self.optim.set_lr(self.lr_now())
        reset = self.family.before_step(self.pos.step, self.optim, self.log)
        kwargs, aggressive = self.family.step_kwargs(self.pos.step, size), self.aggressive and not self.pos.aggressive_done
        # Pyro's validation checks shapes and supports of model and guide (our code, tested); off,
        # a step does less Python work. A bad step still stops the run:
        with torch.autocast(self.device.type, torch.bfloat16, enabled=c.amp == "bf16"), \
                pyro.validation_enabled(False):
            if aggressive:  # the encoder first, then this step updates the decoder alone
                self.pos.encoder_steps += self.aggressive.encoder_steps(
                    self.svi, self.family.batch, self.splits["train"], c, self.pos.epoch, **kwargs)
            with self.aggressive.frozen(self.optim, self.aggressive.encoder) if aggressive else contextlib.nullcontext():
                loss = self.svi.step(batch, **kwargs)
        if self.average:
            if reset:  # weights re-initialized before this step: the average starts again from them
                self.average.restart()
            if (self.pos.step + 1) % EMA_EVERY == 0:
                self.average.update()
        return batch, summed[0] if summed else _as_tensor(loss, self.device).reshape(1)

    def read(self, pending, losses, window):
        """Bring the steps' device values in ``pending`` to the host (one read for all of them):
        extend ``losses`` and the token counts; stop on a non-finite loss. -> (time up, interrupted)
        on any process (several processes; else False, False)."""
        if not pending:
            return False, False
        values = torch.cat(pending).view(len(pending), -1).tolist()
        first = self.pos.step - len(pending) + 1
        pending.clear()
        for i, row in enumerate(values):
            if not math.isfinite(row[0]):
                if not self.world.main:
                    raise SystemExit(1)  # process 0 says why
                raise SVAEError(f"the loss became {row[0]} at step {first + i} (the run's last "
                                "checkpoint is intact); train again with a lower --lr or --clip-norm")
        losses.extend(row[0] for row in values)
        if self.world.distributed:
            tokens = sum(row[1] for row in values)
            window[1] += tokens
            self.tokens += tokens
            return any(row[2] > 0 for row in values), any(row[3] > 0 for row in values)
        return False, False

    def run(self):
        """Train until a budget, early stopping or Ctrl-C; returns a summary with every step's loss.
        Step values stay on the device between reads (every READ_EVERY steps and at validation);
        with several processes, the time budget and signals act at a read, on every process alike."""
        c, p, train, world = self.c, self.pos, self.splits["train"], self.world
        size = len(train)
        interrupted = []
        restore_signals = _catch_stop_signals(interrupted)
        started, losses, last_eval, pending = time.time(), [], p.step, []
        bar = progress_bar(total=self.total_steps, initial=p.step, unit="step", disable=not self.progress,
                           smoothing=0.05, every=max(self.c.eval_every // 5, 1))
        window = [time.time(), 0]  # tokens/s since the last display
        time_up, stop = (x > 0 for x in world.sum([self.time_up(started), bool(interrupted)], self.device))
        reason = self.stop_reason(time_up)
        self.family.module.train()
        try:
            while reason is None and not stop:
                order = batch_order(train, c.batch_size, c.seed, p.epoch)
                while p.batch < len(order):
                    positions = order[p.batch]
                    if len(positions) < world.size:  # an epoch's last batch, too small to share: skipped
                        p.batch += 1
                        continue
                    flags = [self.time_up(started), bool(interrupted)]
                    batch, value = self.step(positions, size, flags)
                    pending.append(value)
                    p.step += 1
                    p.batch += 1
                    bar.update(1)
                    if not world.distributed:  # this process's own clock and signals, at once
                        tokens = batch.num_tokens()
                        window[1] += tokens
                        self.tokens += tokens
                        time_up, stop = flags[0] or self.time_up(started), bool(interrupted)
                    due = p.step % READ_EVERY == 0 or p.step == 1 or p.step % c.eval_every == 0
                    if due or self.stop_reason(False) or (stop and not world.distributed):
                        any_up, any_stop = self.read(pending, losses, window)
                        time_up, stop = time_up or any_up, stop or any_stop
                        if (self.progress or self.experiment_log) and (p.step % READ_EVERY == 0 or p.step == 1):
                            self._show(bar, batch, losses[-1] / size, window, started)
                    if p.step % c.eval_every == 0:
                        self.evaluate(started, losses[last_eval - p.step:])
                        last_eval = p.step
                        time_up = world.sum([self.time_up(started)], self.device)[0] > 0  # validating took time
                    reason = self.stop_reason(time_up)
                    stop = stop or (bool(interrupted) and not world.distributed)  # e.g. while validating
                    if reason or stop:
                        break
                else:
                    p.epoch += 1
                    p.batch = 0
                    reason = self.stop_reason(time_up)
            self.read(pending, losses, window)
        finally:
            restore_signals()
            bar.close()
            if self.experiment_log:
                self.experiment_log.close()
        train_seconds = time.time() - started - self.eval_seconds  # the steps alone
        if stop:
            reason = "interrupted"
        if p.step != last_eval or not self.checkpointed:
            self.evaluate(started, losses[last_eval - p.step:] if p.step > last_eval else [])
        return {"run": self.out_dir, "stopped": reason, "step": p.step, "epoch": p.epoch,
                "best_elbo": p.best_elbo, "selected_by": self.c.select, "losses": losses, "last": self.last_metrics,
                "tokens": int(self.tokens), "train_seconds": train_seconds, "processes": world.size}

    def _show(self, bar, batch, loss, window, started):
        values = {"loss": loss, **self.family.progress(batch, self.pos.step - 1)}
        now = time.time()
        values["tokens_per_s"] = window[1] / max(now - window[0], 1e-9)
        if self.experiment_log:
            self.experiment_log.scalars(self.pos.step, {f"train/{k}": v for k, v in {**values, "lr": self.lr_now()}.items()})
        post = {k: f"{v:.3f}" if k == "beta" else f"{v:.2f}" for k, v in values.items() if k != "tokens_per_s"}
        post["tok/s"] = f"{values['tokens_per_s']:.0f}"
        if self.c.max_minutes and not self.total_steps:
            left = self.c.max_minutes - self.pos.minutes - (now - started) / 60
            post["eta"] = f"{max(left, 0):.1f}m"
        bar.set_postfix(post, refresh=False)
        window[0], window[1] = now, 0

    # -- validation -----------------------------------------------------------------------------
    def evaluate(self, started, recent_losses):
        """Validate, decide whether this is the best so far, write metrics.csv and the checkpoints."""
        began = time.time()
        try:
            return self._evaluate(started, recent_losses)
        finally:
            self.eval_seconds += time.time() - began

    def _evaluate(self, started, recent_losses):
        p = self.pos
        with self.average.swapped_in() if self.average else contextlib.nullcontext():
            m = self.family.validate(self.splits["valid"], max(self.c.batch_size, 64), self.world, p.step)
            if self.aggressive:
                m["columns"]["val_mi"] = self.aggressive.validate(p, self.splits["valid"], self.c, self.log)
            # the logs' sample sentences, from the weights validated (forked RNG: training's is untouched)
            samples = self.family.samples(4) if self.world.main and self.experiment_log else None
        minutes = p.minutes + (time.time() - started) / 60
        improved = self.improved(m["score"])
        size = len(self.splits["train"])
        train_loss = sum(recent_losses) / len(recent_losses) / size if recent_losses else float("nan")
        row = {"step": p.step, "epoch": p.epoch, "beta": m["beta"], "train_loss": round(train_loss, 4),
               **m["columns"], "lr": self.lr_now(), "minutes": round(minutes, 3), **m["extra"]}
        saved_minutes, p.minutes = p.minutes, minutes
        state = self.state()  # on every process (a collective); process 0 writes
        p.minutes = saved_minutes
        if self.world.main:
            append_metrics(os.path.join(self.out_dir, METRICS), row)
            self._log_validation(row, samples)
            if improved:  # best.pt: the same state without the optimizer's, and the weights validated
                best = {k: v for k, v in state.items() if k not in ("optim", "ema")}
                if self.average:
                    best["model"] = self.average.averaged_state_dict()
                atomic_save(best, os.path.join(self.out_dir, BEST))
            atomic_save(state, os.path.join(self.out_dir, CHECKPOINT))
        self.checkpointed = True
        self.last_metrics = row
        with tqdm.external_write_mode():
            first, *rest = self.family.report(m)
            self.log(f"step {p.step}: {first}" + (" *" if improved else ""))
            for line in rest:
                self.log(line)
        return row

    def _log_validation(self, row, samples):
        if self.experiment_log:
            if not self.logged_config:
                self.experiment_log.hparams(dataclasses.asdict(self.c))
                self.logged_config = True
            values = {f"val/{k[4:]}": v for k, v in row.items() if k.startswith("val_") and isinstance(v, (int, float))}
            self.experiment_log.scalars(row["step"], {**values, "train/beta": row["beta"]})
            self.experiment_log.text(row["step"], "samples", samples)

    def improved(self, score):
        """Record a validation ``score``: True if it is the best so far; else count it against the
        patience and decay the learning rate."""
        p = self.pos
        if score > p.best_elbo:
            p.best_elbo, p.bad_evals = score, 0
            return True
        p.bad_evals += 1
        if self.c.lr_decay != 1.0:
            p.lr *= self.c.lr_decay
            self.optim.set_lr(p.lr)
        return False


def _as_tensor(loss, device):
    """A step's loss as a tensor (an ELBO that reads its loss back gives a float)."""
    return loss if torch.is_tensor(loss) else torch.tensor(float(loss), device=device)


def _to_device(t, device):
    """A small host tensor on ``device`` without waiting for the device's queue (pinned, non-blocking)."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


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
