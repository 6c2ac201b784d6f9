"""The neural networks: an LSTM encoder of sentences and an LSTM decoder conditioned on z."""

import contextlib

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..data.tokenizers import BOS, PAD, UNK


POOLS = ("last", "max", "mean")


class Encoder(nn.Module):
    """tokens [B, T] (w1..wn </s>) and lengths [B] -> summary h [B, out_dim].

    ``pool``: last (the final state of each direction), or max / mean over the top layer's outputs
    at every real token (Long et al. 2019: a pooled summary sees every word, not only the last)."""

    def __init__(self, vocab_size, emb_dim, hidden, layers=1, bidirectional=False, dropout=0.0, pool="last"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, not {pool!r}")
        self.pool = pool
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.LSTM(emb_dim, hidden, layers, batch_first=True, bidirectional=bidirectional,
                           dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.directions = 2 if bidirectional else 1
        self.out_dim = hidden * self.directions

    def forward(self, tokens, lengths):
        x = self.drop(self.embed(tokens))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)  # lengths on the host
        outputs, (h, _) = self.rnn(packed)  # h: [layers * directions, B, H]
        if self.pool == "last":
            last = h[-self.directions :]  # the top layer, each direction
            return last.transpose(0, 1).reshape(tokens.shape[0], self.out_dim)
        states, lengths = pad_packed_sequence(outputs, batch_first=True)  # [B, T', out_dim] (zeros past each end), [B]
        real = (torch.arange(states.shape[1]) < lengths[:, None]).to(states.device)
        if self.pool == "max":
            return states.masked_fill(~real[..., None], float("-inf")).amax(1)
        return states.sum(1) / real.sum(1, keepdim=True).to(states.dtype)


class Decoder(nn.Module):
    """An LSTM language model whose initial state (and optionally every input) depends on z.

    ``z_dim = 0`` gives a plain LSTM language model (the baseline). ``inputless``: every input word
    is <unk> (Bowman et al.'s inputless decoder, trained with word keep 0), in training, scoring and
    decoding alike, so that x_t depends on z and t only."""

    def __init__(self, vocab_size, emb_dim, hidden, z_dim, layers=1, feed_z=False, tie=False,
                 dropout=0.0, skip=False, inputless=False):
        super().__init__()
        self.layers, self.hidden, self.z_dim, self.inputless = layers, hidden, z_dim, inputless
        self.feed_z = feed_z and z_dim > 0
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.init = nn.Linear(z_dim, 2 * layers * hidden) if z_dim > 0 else None
        self.rnn = nn.LSTM(emb_dim + (z_dim if self.feed_z else 0), hidden, layers, batch_first=True,
                           dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        # tied output: project to the embedding size, then score against the embedding matrix
        self.proj = nn.Linear(hidden, emb_dim) if tie else None
        self.out = nn.Linear(emb_dim if tie else hidden, vocab_size)
        # z's own term in every step's logits (a skip connection past the LSTM, Dieng et al. 2019)
        self.skip = nn.Linear(z_dim, vocab_size, bias=False) if skip and z_dim > 0 else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)
        if tie:
            # a shared matrix also scores words: N(0, 1) rows would make the first logits huge
            nn.init.uniform_(self.embed.weight, -0.1, 0.1)
            with torch.no_grad():
                self.embed.weight[PAD].zero_()
            self.out.weight = self.embed.weight

    def initial_state(self, z, batch_size=None):
        """z [B, Z] -> (h0, c0), each [layers, B, H]; zeros without a latent."""
        if self.init is None:
            return None
        h, c = self.init(z).view(z.shape[0], 2, self.layers, self.hidden).permute(1, 2, 0, 3)
        return torch.tanh(h).contiguous(), c.contiguous()

    def forward(self, inputs, z, state=None):
        """inputs [B, T], z [B, Z] or None -> logits [B, T, V], final state."""
        if state is None and z is not None:
            state = self.initial_state(z)
        if self.inputless:
            inputs = word_dropout(inputs, 0.0)
        x = self.drop(self.embed(inputs))
        if self.feed_z:
            x = torch.cat([x, z.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)
        h, state = self.rnn(x, state)
        h = self.drop(h)
        if self.proj is not None:
            h = self.proj(h)
        if self.skip is not None:
            return self.out(h) + self.skip(z).unsqueeze(1), state
        return self.out(h), state

    def step(self, tokens, z, state):
        """One step for a whole batch: tokens [N] -> logits [N, V], new state."""
        logits, state = self(tokens.unsqueeze(1), z, state)
        return logits.squeeze(1), state


def word_dropout(inputs, keep):
    """Replace each decoder input word by <unk> with probability 1 - keep (never <s> or <pad>).

    keep = 0 is Bowman et al.'s inputless decoder."""
    if keep >= 1.0:
        return inputs
    words = (inputs != PAD) & (inputs != BOS)
    dropped = torch.rand(inputs.shape, device=inputs.device) >= keep
    return inputs.masked_fill(words & dropped, UNK)


@contextlib.contextmanager
def frozen(*modules):
    """Within: the modules' parameters need no gradients (the model is fixed while something
    else, such as z or per-sentence variational parameters, is optimized)."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
