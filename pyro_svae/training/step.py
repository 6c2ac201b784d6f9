"""The training step: ``pyro.infer.SVI`` with the loss left on the device and the trained
parameters captured once."""

from pyro import poutine
from pyro.infer import SVI

from ..models.registration import known_params


class DeviceSVI(SVI):
    """``pyro.infer.SVI`` whose ``step`` returns the loss as the ELBO leaves it (a 0-d tensor on the
    device for the package's ELBOs: no host synchronization), and which traces the parameter sites
    once, at the first step, instead of at every step; the steps after it register no network
    with Pyro (``known_params``: the parameters are those of the first step). The optimizer (``GlobalClipAdam``) fixes its
    parameters at the first step too, so a parameter first seen later would not be trained in
    either case. ``last_loss``: the step's loss, set before the optimizer runs (so that its
    gradient all-reduce can carry it)."""

    def __init__(self, model, guide, optim, loss, **kwargs):
        super().__init__(model, guide, optim, loss, **kwargs)
        self.params, self.last_loss = None, None

    def step(self, *args, **kwargs):
        if self.params is None:
            with poutine.trace(param_only=True) as capture:
                loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
            self.params = list({id(p): p for p in (site["value"].unconstrained()
                                                   for site in capture.trace.nodes.values())}.values())
        else:
            with known_params():
                loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        self.last_loss = loss
        self.optim(self.params)
        for p in self.params:  # as SVI's zero_grads (GlobalClipAdam already drops them)
            p.grad = None
        return loss


def compile_networks(module, what):
    """``--compile``: off, or decoder: ``torch.compile`` the decoder of ``module`` in place (its
    state dict keeps its names), with dynamic shapes, so the bucketed lengths share one graph.
    Dynamo falls back to eager for what it cannot compile (the LSTM itself runs as the eager op)."""
    if what == "off":
        return
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a frame that fails to compile runs eager
    module.decoder.compile(dynamic=True)
