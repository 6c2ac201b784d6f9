"""The training step: ``pyro.infer.SVI`` with the loss left on the device and the trained
parameters captured once; ``--compile step`` replays each batch shape's step as a TorchScript
trace of the Pyro program (``TracedLoss``)."""

import warnings
from collections import OrderedDict

import torch
import torch.nn as nn
from pyro import poutine
from pyro.infer import SVI

from ..data.corpus import Batch
from ..models.registration import known_params
from ..models.vae import BETA_FLOOR


class DeviceSVI(SVI):
    """``pyro.infer.SVI`` whose ``step`` returns the loss as the ELBO leaves it (a 0-d tensor on the
    device for the package's ELBOs: no host synchronization), and which traces the parameter sites
    once, at the first step, instead of at every step; the steps after it register no network
    with Pyro (``known_params``: the parameters are those of the first step). The optimizer (``GlobalClipAdam``) fixes its
    parameters at the first step too, so a parameter first seen later would not be trained in
    either case. ``last_loss``: the step's loss, set before the optimizer runs (so that its
    gradient all-reduce can carry it)."""

    def __init__(self, model, guide, optim, loss, traced=None, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.params, self.last_loss = None, None
        self.traced = traced  # a TracedLoss for the steps after the first, or None (eager)

    def step(self, *args, **kwargs):
        if self.params is None:
            with poutine.trace(param_only=True) as capture:
                loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
            self.params = list({id(p): p for p in (site["value"].unconstrained()
                                                   for site in capture.trace.nodes.values())}.values())
        else:
            with known_params():
                if self.traced is not None and self.traced.usable:
                    loss = self.traced.loss(*args, **kwargs)
                    loss.backward()
                    loss = loss.detach()
                else:
                    loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        self.last_loss = loss
        self.optim(self.params)
        for p in self.params:  # as SVI's zero_grads (GlobalClipAdam already drops them)
            p.grad = None
        return loss


def compile_networks(module, what):
    """``--compile decoder``: ``torch.compile`` the decoder of ``module`` in place (its
    state dict keeps its names), with dynamic shapes, so the bucketed lengths share one graph.
    Dynamo falls back to eager for what it cannot compile (the LSTM itself runs as the eager op)."""
    if what != "decoder":
        return
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a frame that fails to compile runs eager
    module.decoder.compile(dynamic=True)


class _LossOf(nn.Module):
    """A batch's loss as a function of tensors alone, for ``torch.jit.trace``: the networks are
    submodules (their parameters enter the trace as the module's), the float keywords that change
    from step to step (the KL weight) are 0-d tensors, the others fixed."""

    def __init__(self, loss, networks, kwargs):
        super().__init__()
        self.networks, self.elbo, self.kwargs = networks, loss, kwargs

    def forward(self, index, inputs, targets, lengths, *dynamic):
        return self.elbo(Batch(index, inputs, targets, lengths), **self.kwargs,
                         **dict(zip(TracedLoss.DYNAMIC, dynamic)))


class TracedLoss:
    """``--compile step``: the differentiable loss of a step, ``loss(batch, **kwargs)``, replayed
    from a TorchScript trace of the whole Pyro program (guide, model replayed on it, the ELBO) per
    batch shape, instead of running Pyro's effect handlers and the networks' Python at every step.

    The trace is the eager computation's own sequence of tensor operations, run unoptimized
    (``torch.jit.optimized_execution(False)``: no fusion, the random draws in the same order), so a
    traced step gives bitwise the eager step's loss, gradients and random stream. Traces are built
    on a forked RNG (the build's draws are discarded) and kept for the ``limit`` most recent shapes.
    A trace fixes whatever Python computed from the batch it was built on; so the first two batches
    of each shape (the one it was built on, and another) are also run eagerly, as an eager run
    would (float keywords as floats), from the same RNG state; any difference in the loss or the
    random stream turns tracing off for the rest of the run (``usable``), with one ``warn``.
    ``elbo(batch, **kwargs)``: the eager differentiable loss; ``networks``: the module holding every
    parameter it trains."""

    DYNAMIC = ("beta",)  # float keywords passed as tensors: the KL weight changes every step

    def __init__(self, elbo, networks, warn=print, limit=256):
        self.elbo, self.networks, self.warn, self.limit = elbo, networks, warn, limit
        self.traces, self.unchecked, self.usable = OrderedDict(), {}, True

    def loss(self, batch, **kwargs):
        fixed = {k: v for k, v in kwargs.items() if k not in self.DYNAMIC}
        # float64, as Python's arithmetic on them: a float32 beta would round the sites' scales differently
        dynamic = {k: torch.tensor(max(float(kwargs[k]), BETA_FLOOR), dtype=torch.float64)
                   for k in self.DYNAMIC if k in kwargs}
        tensors = (batch.index, batch.inputs, batch.targets, batch.lengths, *dynamic.values())
        device = batch.targets.device
        key = (tuple(batch.targets.shape), tuple(batch.inputs.shape), device, tuple(sorted(fixed.items())),
               tuple(dynamic), self.networks.training)
        trace = self.traces.get(key)
        if trace is None:
            try:
                trace = self.traces[key] = self._trace(tensors, fixed)
            except Exception as e:  # noqa: BLE001  (a program the tracer cannot follow: eager it is)
                return self._eager(batch, kwargs, f"the step could not be traced ({type(e).__name__}: {e})")
            self.unchecked[key] = 2
            while len(self.traces) > self.limit:
                self.unchecked.pop(self.traces.popitem(last=False)[0], None)
        self.traces.move_to_end(key)
        if key not in self.unchecked:
            return _run(trace, tensors)
        # the first two batches of a shape: the traced step against the eager one, from one RNG state
        self.unchecked[key] -= 1
        if not self.unchecked[key]:
            del self.unchecked[key]
        before = _rng_state(device)
        loss = _run(trace, tensors)
        after = _rng_state(device)
        _set_rng_state(before, device)
        eager = self.elbo(batch, **kwargs)
        if torch.equal(loss.detach(), eager.detach()) and all(map(torch.equal, after, _rng_state(device))):
            return loss
        return self._eager(batch, None, f"a traced step gave the loss {float(loss.detach()):.6g} where the eager "
                           f"step gives {float(eager.detach()):.6g} (batch shape {tuple(batch.targets.shape)})", eager)

    def _eager(self, batch, kwargs, why, loss=None):
        """Tracing off for the rest of the run, with one warning: -> the eager loss (``loss`` or computed)."""
        self.usable = False
        self.warn(f"--compile step: {why}; training continues eager")
        return loss if loss is not None else self.elbo(batch, **kwargs)

    def _trace(self, tensors, kwargs):
        module = _LossOf(self.elbo, self.networks, kwargs)
        device = tensors[2].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the Python values a trace fixes: checked
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is in maintenance; eager if it goes
            return torch.jit.trace(module, tensors, check_trace=False)


def _run(trace, tensors):
    with torch.jit.optimized_execution(False):  # the operations as traced: bitwise the eager step
        return trace(*tensors)


def _rng_state(device):
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_state(states, device):
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
