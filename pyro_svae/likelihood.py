"""p(x | z) as a Pyro distribution over padded token sequences.

``log_prob`` teacher-forces the decoder and scores all tokens with one fused
log-softmax-and-gather (``F.cross_entropy``), never a normalized Categorical over
[B, T, V]; ``sample`` decodes with a search strategy (greedy, sampling or beam), so decoding
from a given z is the model itself conditioned on z."""

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints

from .decoding import Greedy
from .tokenizers import BOS, EOS, PAD


def shift_right(targets):
    """w1..wn </s> <pad>.. -> <s> w1..wn <pad>.. (the decoder inputs for teacher forcing)."""
    inputs = torch.roll(targets, 1, dims=-1)
    inputs[..., 0] = BOS
    return inputs.masked_fill(inputs == EOS, PAD)  # </s> is never an input


class Sentences(TorchDistribution):
    """Token sequences [B, T] from ``decoder`` given z [B, Z] (z = None: no latent, B = batch_size).

    inputs: the teacher-forcing inputs for log_prob (e.g. after word dropout); by default the
    observed tokens shifted right. strategy and max_len: how ``sample`` decodes."""

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, decoder, z, inputs=None, strategy=None, max_len=50, batch_size=None):
        self.decoder, self.z, self.inputs = decoder, z, inputs
        self.strategy, self.max_len = strategy or Greedy(), max_len
        B = batch_size or (z.shape[0] if z is not None else inputs.shape[0])
        T = inputs.shape[-1] if inputs is not None else max_len
        super().__init__(batch_shape=torch.Size([B]), event_shape=torch.Size([T]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError("Sentences cannot be broadcast to a new batch shape")
        return self

    def log_prob(self, value):
        """value: tokens [B, T] (w1..wn </s>, padded) -> log p(x | z) [B]."""
        inputs = self.inputs if self.inputs is not None else shift_right(value)
        logits, _ = self.decoder(inputs, self.z)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), value.reshape(-1),
                              ignore_index=PAD, reduction="none")
        return -nll.view(value.shape).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        if sample_shape != torch.Size():
            raise NotImplementedError("draw several sentences by repeating z")
        return self.strategy(self.decoder, self.z, self.max_len, self.batch_shape[0])
