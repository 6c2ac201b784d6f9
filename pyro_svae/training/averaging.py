"""An exponential moving average of the weights (Polyak averaging), which ``--ema`` validates and
saves as best.pt while training goes on with the raw weights."""

import contextlib

import torch


@torch.no_grad()
def copy_weights(module, weights):
    """Copy ``weights`` ({parameter name: tensor}, every parameter of ``module``) into its parameters."""
    for name, p in module.named_parameters():
        p.copy_(weights[name])


class WeightAverage:
    """avg <- d_t avg + (1 - d_t) w at each update t = 1, 2, ... of a module's parameters w, with
    d_t = min(decay, t / (t + 9)) so that the first updates are not averaged with the
    initialization (TensorFlow's ExponentialMovingAverage with num_updates). ``state()`` and
    ``load()`` carry it through a checkpoint: tensors by parameter name, and the count t."""

    def __init__(self, module, decay):
        self.module, self.decay, self.count = module, decay, 0
        self.average = {name: p.detach().clone() for name, p in module.named_parameters()}

    def rate(self):
        """d_t of the next update."""
        return min(self.decay, (self.count + 1) / (self.count + 10))

    @torch.no_grad()
    def update(self):
        d = self.rate()
        for name, p in self.module.named_parameters():
            self.average[name].lerp_(p.detach(), 1.0 - d)
        self.count += 1

    @torch.no_grad()
    def restart(self):
        """Forget the past: the average is the weights now (e.g. a decoder re-initialized)."""
        for name, p in self.module.named_parameters():
            self.average[name].copy_(p.detach())
        self.count = 0

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self):
        """The module holds the average inside the block, its own weights again after it."""
        own = {name: p.detach().clone() for name, p in self.module.named_parameters()}
        copy_weights(self.module, self.average)
        try:
            yield
        finally:
            copy_weights(self.module, own)

    def averaged_state_dict(self):
        """The module's state_dict with the average in place of its parameters (best.pt's weights;
        a tied weight under each of its names)."""
        with self.swapped_in():
            return {k: v.clone() for k, v in self.module.state_dict().items()}

    def state(self):
        return {"average": {k: v.clone() for k, v in self.average.items()}, "count": self.count}

    @torch.no_grad()
    def load(self, state):
        for name, value in state["average"].items():
            self.average[name].copy_(value)
        self.count = int(state["count"])
