"""The optimizer (Adam over every parameter, clipped by the global norm) and the choice of loss."""

import pyro
import torch
from pyro.optim import PyroOptim

from ..inference.objectives import EnumELBO, FreeBitsELBO, ImportanceWeightedELBO, ReparamELBO, ScoreFunctionELBO
from ..models.discrete import estimator


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
        self.frozen = ()  # parameters that the next steps leave as they are (--aggressive)

    def __call__(self, params, *args, **kwargs):
        if self.adam is None:
            self.params = sorted(params, key=pyro.get_param_store().param_name)
            self.clipped = [p for p in self.params if not _is_baseline(pyro.get_param_store().param_name(p))]
            self.adam = make_adam(self.params, self.lr)
            if self.pending is not None:
                self.adam.load_state_dict(self.pending)
        for p in self.frozen:  # no gradient: Adam skips it, moments and all
            p.grad = None
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
    """The training objective of config ``c``: the IW bound (K > 1), free bits, or Pyro's
    Trace_ELBO (sampled KL) or TraceMeanField_ELBO (analytic KL) estimate, computed on the device."""
    if c.model == "lm":
        return ReparamELBO()
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
    return FreeBitsELBO(0.0) if c.elbo == "meanfield" else ReparamELBO()
