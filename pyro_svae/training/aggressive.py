"""He et al. 2019's aggressive encoder updates ("Lagging Inference Networks and Posterior
Collapse"), ``--aggressive N``: while the phase lasts, each training step is preceded by up to N
steps that update the encoder alone, on random training batches, until their loss stops falling;
the training step itself then updates the decoder alone. The phase ends at the first scheduled
validation (every --eval-every steps) whose mutual information I(x; z) does not rise above the one
before it."""

import contextlib
import math

import torch

from ..data.corpus import EncodedSplit, batch_order, gather
from ..devices import forked_rng
from ..errors import SVAEError
from ..evaluation.metrics import mutual_information
from ..evaluation.reconstruction import validation_sample

CHECK_EVERY = 10  # encoder steps between two looks at their mean loss per token
MI_SENTENCES = 1000  # validation sentences whose I(x; z) decides when the phase ends


def aggressive_encoder(c, family, world):
    """The AggressiveEncoder of ``--aggressive`` (None when 0; check_config has checked the model)."""
    if not c.aggressive:
        return None
    if world.distributed:
        raise SVAEError("--aggressive runs in one process (not under torchrun)")
    return AggressiveEncoder(family.svae, c.aggressive)


class AggressiveEncoder:
    """The encoder's parameters (encoder, posterior and a mixture's q(c|x)) against the rest."""

    def __init__(self, svae, max_steps):
        self.svae, self.max_steps = svae, max_steps
        guide = [svae.encoder, svae.posterior] + ([svae.component] if svae.component is not None else [])
        decoder_side = {id(p) for m in svae.children() if all(m is not g for g in guide) for p in m.parameters()}
        self.encoder = [p for m in guide for p in m.parameters() if id(p) not in decoder_side]
        encoder_ids = {id(p) for p in self.encoder}
        self.decoder = [p for p in svae.parameters() if id(p) not in encoder_ids]
        self.order = (None, None)  # (epoch, that epoch's batch order)
        self.mi_sentences = None  # validation_sample's, chosen once per run (as the BLEU sample)

    def encoder_steps(self, svi, batch_of, split, c, epoch, **kwargs):
        """Up to ``max_steps`` SVI steps that update the encoder alone, each on a batch of this
        epoch's order (config ``c``'s batches) drawn at random (the global torch RNG), until the mean
        loss per token of the last CHECK_EVERY steps is no lower than that of the CHECK_EVERY before.
        batch_of(split, positions, device) makes a batch. -> steps taken."""
        if self.order[0] != epoch:
            self.order = (epoch, batch_order(split, c.batch_size, c.seed, epoch))
        order = self.order[1]
        previous, loss, tokens = math.inf, 0.0, 0
        with self.frozen(svi.optim, self.decoder):
            for i in range(1, self.max_steps + 1):
                batch = batch_of(split, order[int(torch.randint(len(order), ()))], self.svae.device)
                loss += float(svi.step(batch, **kwargs))
                tokens += batch.num_tokens()
                if i % CHECK_EVERY == 0:
                    if loss / tokens >= previous:
                        return i
                    previous, loss, tokens = loss / tokens, 0.0, 0
        return self.max_steps

    def validate(self, pos, split, c, log):
        """I(x; z) now (metrics.csv's val_mi). At a scheduled validation (not one at a stop, so that a
        resumed run is an uninterrupted one) the phase ends if it is no higher than the last one."""
        mi = round(self.mutual_information(split, c.max_len, c.seed), 4)
        if pos.step % c.eval_every == 0:
            if not pos.aggressive_done and mi <= pos.mi:
                pos.aggressive_done = True
                log(f"step {pos.step}: aggressive encoder updates end after {pos.encoder_steps} encoder steps "
                    f"(I(x;z) {mi:.3f}, before {pos.mi:.3f})")
            pos.mi = mi
        return mi

    @contextlib.contextmanager
    def frozen(self, optim, params):
        """Steps of ``optim`` (GlobalClipAdam) that leave ``params`` as they are."""
        optim.frozen = params
        try:
            yield
        finally:
            optim.frozen = ()

    @torch.no_grad()
    def mutual_information(self, split, max_len, seed):
        """I(x; z) of q over the first MI_SENTENCES validation sentences (one draw each, the
        aggregate posterior over the same sentences), on a forked RNG."""
        was_training = self.svae.training
        self.svae.eval()
        if self.mi_sentences is None:
            self.mi_sentences = EncodedSplit.from_lists(validation_sample(split, MI_SENTENCES, max_len))
        sentences = self.mi_sentences
        dists, draws = [], []
        with forked_rng(self.svae.device):
            torch.manual_seed(seed)
            for start in range(0, len(sentences), 250):
                positions = torch.arange(start, min(start + 250, len(sentences)))
                q = self.svae.q(gather(sentences, positions).to(self.svae.device))
                dists.append(q)
                draws.append(q.sample())
        self.svae.train(was_training)
        return mutual_information(dists, draws)
