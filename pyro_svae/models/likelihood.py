"""p(x | z) as a Pyro distribution over padded token sequences.

``log_prob`` teacher-forces the decoder and scores all tokens with one fused
log-softmax-and-gather (``token_nll``), never a normalized Categorical over
[B, T, V]; ``sample`` decodes with a search strategy (greedy, sampling or beam), so decoding
from a given z is the model itself conditioned on z."""

import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.ops.provenance import ProvenanceTensor, extract_provenance, track_provenance

from .decoding import Greedy
from ..data.tokenizers import BOS, EOS, PAD


def _log_softmax(logits):
    """Over the last dimension, in at least float32 (bf16 logits under autocast are upcast)."""
    return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


class TokenNLL(torch.autograd.Function):
    """-log softmax(logits)[target] per row, 0 where target is <pad>: the value of
    ``F.cross_entropy(..., ignore_index=PAD, reduction="none")`` with a leaner backward. Forward
    keeps the log-softmax [N, V]; backward turns that buffer into the gradient in place,
    (softmax - onehot) * grad, instead of materializing nll_loss's one-hot gradient and running
    log_softmax's backward over it: one pass over [N, V] fewer and one buffer less. So it can be
    differentiated once per forward (Pyro's ELBOs do exactly that)."""

    @staticmethod
    def forward(ctx, logits, targets):
        log_p = _log_softmax(logits)
        keep = (targets != PAD).to(log_p.dtype)
        nll = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1) * keep
        ctx.save_for_backward(log_p, targets, keep)
        ctx.dtype, ctx.used = logits.dtype, False
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        if ctx.used:
            raise RuntimeError("TokenNLL's backward consumes its buffer: differentiate once per forward")
        ctx.used = True
        log_p, targets, keep = ctx.saved_tensors
        w = (grad * keep).unsqueeze(1)
        out = log_p.exp_().mul_(w).scatter_add_(1, targets.unsqueeze(1), -w)
        return out.to(ctx.dtype), None


def token_nll(logits, targets, block=2048):
    """logits [..., V], targets [...] -> -log p(target) [...], 0 at <pad>. Without gradients
    (evaluation), ``block`` rows at a time, so no float32 [N, V] buffer beyond [block, V] exists."""
    V = logits.shape[-1]
    if isinstance(logits, ProvenanceTensor):  # TraceGraph_ELBO's tracking: a custom Function would drop the graph
        logits, provenance = extract_provenance(logits)
        return track_provenance(token_nll(logits, targets, block), provenance)
    rows, targets_flat = logits.reshape(-1, V), targets.reshape(-1)
    if torch.is_grad_enabled() and logits.requires_grad:
        return TokenNLL.apply(rows, targets_flat).view(targets.shape)
    nll = torch.empty(targets_flat.shape, dtype=torch.promote_types(logits.dtype, torch.float32),
                      device=logits.device)
    for start in range(0, rows.shape[0], block):
        part = slice(start, start + block)
        nll[part] = -_log_softmax(rows[part]).gather(1, targets_flat[part].unsqueeze(1)).squeeze(1)
    return nll.masked_fill_(targets_flat == PAD, 0.0).view(targets.shape)


def shift_right(targets):
    """w1..wn </s> <pad>.. -> <s> w1..wn <pad>.. (the decoder inputs for teacher forcing)."""
    inputs = torch.roll(targets, 1, dims=-1)
    inputs[..., 0] = BOS
    return inputs.masked_fill(inputs == EOS, PAD)  # </s> is never an input


class Sentences(TorchDistribution):
    """Token sequences [B, T] from ``decoder`` given z [B, Z] (z = None: no latent, B = batch_size).
    z [..., B, Z] with dims on the left (an enumerated class, models/labeled.py): batch shape
    [..., B], every code scoring the same sentences.

    inputs: the teacher-forcing inputs for log_prob (e.g. after word dropout); by default the
    observed tokens shifted right. strategy and max_len: how ``sample`` decodes."""

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, decoder, z, inputs=None, strategy=None, max_len=50, batch_size=None):
        self.decoder, self.z, self.inputs = decoder, z, inputs
        self.strategy, self.max_len = strategy, max_len  # None: greedy
        batch = torch.Size([batch_size]) if batch_size else z.shape[:-1] if z is not None else inputs.shape[:1]
        T = inputs.shape[-1] if inputs is not None else max_len
        super().__init__(batch_shape=batch, event_shape=torch.Size([T]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError("Sentences cannot be broadcast to a new batch shape")
        return self

    def log_prob(self, value):
        """value: tokens [B, T] (w1..wn </s>, padded) -> log p(x | z) [B]."""
        inputs = self.inputs if self.inputs is not None else shift_right(value)
        z = self.z
        if z is not None and z.dim() > 2:  # codes [..., B, Z]: the sentences once per leading index
            copies = z.shape[:-2].numel()
            logits, _ = self.decoder(inputs.repeat(copies, 1), z.reshape(-1, z.shape[-1]))
            return -token_nll(logits, value.repeat(copies, 1)).sum(-1).view(z.shape[:-1])
        logits, _ = self.decoder(inputs, z)
        return -token_nll(logits, value).sum(-1)

    def sample(self, sample_shape=torch.Size()):
        if sample_shape != torch.Size():
            raise NotImplementedError("draw several sentences by repeating z")
        return (self.strategy or Greedy())(self.decoder, self.z, self.max_len, self.batch_shape[0])
