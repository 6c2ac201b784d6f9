"""What the training loop asks of a model family, and the sentence VAE's (and LM's) answers.

A family owns its networks (``module``), its Pyro ``model`` and ``guide``, the loss, how a batch
is built and what a step passes to ``SVI.step``, and what validation measures. The loop
(``loop.Trainer``) owns everything else: order of batches, the optimizer, checkpoints,
``torchrun``, budgets and early stopping. A new family (documents, labels) implements these."""

import dataclasses
import os
from typing import Protocol

import torch

from ..checkpoint import load_checkpoint
from ..data.corpus import gather
from ..data.tokenizers import vocab_hash
from ..devices import forked_rng
from ..errors import SVAEError
from ..evaluation.metrics import validate
from ..evaluation.reconstruction import validation_bleu, validation_sample
from ..inference.kl import latent_kl
from ..inference.schedules import parse_schedule
from ..models.decoding import Greedy
from ..models.discrete import parse_tau
from ..models.vae import BETA_FLOOR, SentenceVAE
from .optim import make_loss
from .rundir import BEST, model_config, restore_model

COLLAPSED_KL = 0.5  # validation KL (nats per sentence) under which training warns of collapse
VALIDATION_BLEU_SENTENCES = 100  # the first validation sentences (of <= --max-len tokens) that the metrics.csv BLEU reconstructs


class Family(Protocol):
    module: torch.nn.Module  # every parameter; its state_dict is the checkpoint's "model"

    def model(self, *args, **kwargs): ...
    def guide(self, *args, **kwargs): ...
    def loss(self): ...  # a Pyro ELBO
    def batch(self, split, positions, device): ...  # a batch with .num_tokens()
    def step_kwargs(self, step, size): ...  # keyword arguments of SVI.step besides the batch
    def before_step(self, step, optim, log): ...  # e.g. reset the decoder after pretraining: True if it did
    def progress(self, batch, step): ...  # {name: number} for the progress bar and the logs
    def samples(self, n): ...  # a few decoded sentences for the logs' text
    def validate(self, split, batch_size, world, step): ...  # {"score", "beta", "columns", "extra"}
    def report(self, metrics): ...  # a line for the log


class AnnealedFamily:
    """What the families share: a KL weight beta that follows ``c.kl_schedule`` (``start`` builds
    it once the run's length is known), nothing to do before a step, beta on the progress bar."""

    c = None
    schedule = None

    def start(self, total_steps):
        self.schedule = parse_schedule(self.c.kl_schedule, total_steps)

    def beta(self, step):
        return self.schedule(step)

    def logged_beta(self, step):
        """The KL weight of the step before validation at ``step``, as metrics.csv records it."""
        return round(max(self.beta(max(step - 1, 0)), BETA_FLOOR), 6)

    def before_step(self, step, optim, log):
        pass

    def progress(self, batch, step):
        return {"beta": max(self.beta(step), BETA_FLOOR)}


class SentenceFamily(AnnealedFamily):
    """The sentence VAE of config ``c`` (``--model lm``: its decoder alone) for the loop."""

    def __init__(self, c, tokenizer, device):
        self.c, self.tokenizer = c, tokenizer
        self.module = self.svae = SentenceVAE(model_config({"train": dataclasses.asdict(c)}, len(tokenizer))).to(device)
        self.model, self.guide = self.svae.model, self.svae.guide
        self.discrete = self.svae.estimator or None
        # --compile step: Gaussian latents (or none); a discrete site's estimators are not traced
        self.traceable = not self.discrete
        self.tau = parse_tau(c.tau) if self.discrete == "concrete" else (lambda step: None)
        self.warned = False
        self.bleu_sample = None  # validation_sample of the valid split, at the first validation

    def loss(self):
        return make_loss(self.c)

    def beta(self, step):
        """The KL weight: ~0 while pretraining as an autoencoder, then the schedule from there."""
        c = self.c
        return BETA_FLOOR if step < c.pretrain_steps else self.schedule(step - c.pretrain_steps)

    def batch(self, split, positions, device):
        return gather(split, positions).to(device)

    def step_kwargs(self, step, size):
        return dict(size=size, beta=self.beta(step), word_keep=self.c.word_keep, discrete=self.discrete,
                    temperature=self.tau(step))

    def before_step(self, step, optim, log):
        if self.c.pretrain_steps and step == self.c.pretrain_steps:
            self.reset_decoder(optim)
            log(f"step {step}: autoencoder pretraining done; decoder re-initialized")
            return True
        return False

    def progress(self, batch, step):
        with torch.no_grad(), forked_rng(self.svae.device):
            kl = float(latent_kl(self.svae, batch).mean()) if self.svae.z_dim else 0.0
        return {"kl": kl, "beta": max(self.beta(step), BETA_FLOOR)}

    def samples(self, n=4):
        """n sentences decoded (greedy) from z ~ p(z), on a forked RNG: the logs' text at validation."""
        if not self.svae.z_dim:
            return []
        was_training = self.svae.training
        self.svae.eval()
        with torch.no_grad(), forked_rng(self.svae.device):
            torch.manual_seed(self.c.seed)
            _, tokens = self.svae.decode(None, n, Greedy(unk=False), self.c.max_len + 1)
        self.svae.train(was_training)
        return [self.tokenizer.decode(row.tolist()) for row in tokens]

    def validate(self, split, batch_size, world, step):
        k = self.c.iw_particles
        floored = self.c.select == "floored"
        m = validate(self.svae, split, batch_size, seed=self.c.seed, iw_samples=k if k > 1 else 0, world=world,
                     free_bits=self.c.free_bits if floored else 0.0)
        columns = {"val_elbo": round(m["elbo"], 4), "val_rec": round(m["rec"], 4), "val_kl": round(m["kl"], 4),
                   "val_ppl_bound": round(m["ppl_bound"], 3)}
        select_bleu = self.c.select == "bleu"  # then every process scores it (patience stops them all)
        if self.svae.z_dim and (world is None or world.main or select_bleu):  # greedy, a fixed sample
            if self.bleu_sample is None:  # chosen once per run: the scan can cover the whole split
                self.bleu_sample = validation_sample(split, VALIDATION_BLEU_SENTENCES, self.c.max_len)
            m["bleu"] = validation_bleu(self.svae, self.tokenizer, self.bleu_sample)
            columns["val_bleu"] = round(m["bleu"], 4)
        bound = m["iw"] if k > 1 else m["elbo"]  # the bound trained on
        score = m["bleu"] if select_bleu else bound - m.get("shortfall", 0.0)  # its KL floored, or BLEU
        extra = {"val_iw": round(m["iw"], 4)} if k > 1 else {}
        if floored:
            extra["val_floored"] = round(score, 4)
        return {**m, "score": score,
                "beta": self.logged_beta(step), "columns": columns, "extra": extra}

    def report(self, m):
        k = self.c.iw_particles
        iw = f", IW bound (K={k}) {m['iw']:.2f}" if k > 1 else ""
        bleu = f", BLEU {m['bleu']:.3f}" if "bleu" in m else ""
        lines = [f"val ELBO {m['elbo']:.2f} (rec {m['rec']:.2f}, KL {m['kl']:.2f}), PPL <= {m['ppl_bound']:.1f}{iw}{bleu}"]
        if self.svae.z_dim and m["kl"] < COLLAPSED_KL and not self.warned:
            self.warned = True
            lines.append(f"warning: validation KL {m['kl']:.2f} nats per sentence: the posterior is collapsing "
                         "(z is ignored); remedies: --free-bits 0.25, --word-keep 0.5, "
                         "--kl-schedule cyclical:4,0.5 (README: Posterior collapse)")
        return lines

    # -- starting points ----------------------------------------------------------------------
    def init_decoder(self, run_dir, tokenizer, log):
        """Start from the decoder of ``run_dir``'s best.pt (same vocabulary and sizes), with the
        layers from z (initial state, skip) at zero: at step 0 the VAE's likelihood is that model's."""
        path = os.path.join(run_dir, BEST)
        state = load_checkpoint(path, self.svae.device)
        if state.get("vocab_hash") != vocab_hash(tokenizer):
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
        log(f"decoder initialized from {path}")

    def init_from(self, run_dir, tokenizer, log):
        """Start from every weight of ``run_dir``'s best.pt (same vocabulary and architecture), with a
        fresh optimizer: to fine-tune a trained model with another objective or learning rate."""
        path = os.path.join(run_dir, BEST)
        restore_model(self.svae, load_checkpoint(path, self.svae.device), tokenizer, f"--init-from {run_dir}")
        log(f"weights initialized from {path}")

    def reset_decoder(self, optim):
        """End of autoencoder pretraining (Li et al. 2019): keep the encoder, start a new decoder."""
        for module in self.svae.decoder.modules():
            if module is not self.svae.decoder and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        optim.reset(self.svae.decoder.parameters())  # and its Adam state
