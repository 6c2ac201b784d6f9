"""The labeled family (``--prior class``, models/labeled.py) for the training loop: Kingma's M2
trained on a corpus whose labels are known for some sentences, the rest summed over exactly."""

import dataclasses

import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.distributions.kl import kl_divergence

from ..data.corpus import gather, sorted_batches
from ..devices import forked_rng
from ..inference.objectives import EnumELBO
from ..inference.unigrams import bag_counts, fit
from ..models.decoding import Greedy
from ..models.labeled import PARTS, LabeledVAE, label_names, parse_classes
from .family import AnnealedFamily
from .rundir import model_config

CLASS_INIT_SENTENCES = 20_000  # the sample of train sentences that the mixture of unigrams is fitted on


class LabeledELBO(EnumELBO):
    """``EnumELBO`` (one plate per part of the batch; the guide's unknown y enumerated in parallel)
    with the free-bits floor on z: per part and latent dimension, the batch-averaged KL of
    q(z | x, y) from N(0, I) (averaged over q(y | x) where y is enumerated) counts as at least
    ``free_bits`` nats (the diag guide, analytic KL; another family floors its total KL, from the
    draw, at ``free_bits`` x Z). The loss stays on the device (a 0-d tensor)."""

    def penalty(self, guide_trace, model_trace=None):
        """scale x batch x sum_d max(0, floor - KL_d), per part (0 without a floor)."""
        if self.free_bits <= 0:
            return 0.0
        total = 0.0
        for part in PARTS:
            site = guide_trace.nodes.get(f"z_{part}")
            if site is None:
                continue
            q, z = site["fn"], site["value"]
            if isinstance(getattr(q, "base_dist", None), dist.Normal):  # analytic, per dimension: [..., B, Z]
                kl, floor = kl_divergence(q.base_dist, dist.Normal(torch.zeros_like(z), 1.0)), self.free_bits
            else:  # another family: log q - log p at the draw, the total KL floored at free_bits x Z
                kl = (q.log_prob(z) - dist.Normal(torch.zeros_like(z), 1.0).to_event(1).log_prob(z)).unsqueeze(-1)
                floor = self.free_bits * z.shape[-1]
            y = guide_trace.nodes.get(f"y_{part}")
            if y is not None:  # E over q(y | x): probs [B, K] -> [K, B, 1] against kl [K, B, U]
                kl = (y["fn"].probs.transpose(0, 1).unsqueeze(-1) * kl).sum(0)
            units = kl.mean(0)  # [U]
            total = total + site["scale"] * kl.shape[0] * (floor - units).clamp(min=0).sum()
        return total


class LabeledFamily(AnnealedFamily):
    """M2 of config ``c`` on a corpus with labels ``names`` (some sentences may be unlabeled)."""

    def __init__(self, c, tokenizer, device, names):
        self.c, self.tokenizer = c, tokenizer
        classes = parse_classes(c.prior, names)
        self.module = self.svae = LabeledVAE(model_config({"train": dataclasses.asdict(c)}, len(tokenizer)),
                                             classes, c.alpha).to(device)
        self.labels = label_names(names, classes)
        self.model, self.guide = self.svae.model, self.svae.guide
        self.sizes, self.train_split = None, None

    def loss(self):
        return LabeledELBO(self.c.free_bits)

    def batch(self, split, positions, device):
        if self.sizes is None:  # each part's share of the corpus, for its plate's scale
            labels = getattr(split, "labels", None)
            labeled = int((labels >= 0).sum()) if labels is not None else 0
            self.sizes = {"labeled": labeled, "unlabeled": len(split) - labeled}
            self.train_split = split
        return gather(split, positions).to(device)

    def before_step(self, step, optim, log):
        if step == 0 and self.c.class_init:
            accuracy = self.initialize_classes()
            log(f"q(y|x) trained {self.c.class_init} steps on a mixture of unigrams (agrees on {accuracy:.1%})")

    def initialize_classes(self):
        """--class-init N: fit a mixture of unigrams by EM (known labels clamped) on a sample of the
        train split, then train the encoder and q(y | x) for N steps on its responsibilities
        (cross-entropy). -> the share of the sample whose argmax q(y | x) agrees with argmax r."""
        split, c, svae = self.train_split, self.c, self.svae
        generator = torch.Generator().manual_seed(c.seed)
        positions = torch.randperm(len(split), generator=generator)[:CLASS_INIT_SENTENCES].sort().values
        sample = gather(split, positions)
        r, _ = fit(bag_counts(sample.targets, len(self.tokenizer)), svae.classes, sample.labels, seed=c.seed)
        params = list(svae.encoder.parameters()) + list(svae.classifier.parameters())
        adam = torch.optim.Adam(params, lr=c.lr)
        for _ in range(c.class_init):
            rows = torch.randint(len(positions), (min(c.batch_size, len(positions)),), generator=generator)
            batch = sample.select(rows).to(svae.device)
            log_q = svae.classifier(svae.encoder(batch.targets, batch.lengths)).log_softmax(-1)
            loss = -(r[rows].to(log_q.device) * log_q).sum(-1).mean()
            adam.zero_grad()
            loss.backward()
            adam.step()
        with torch.no_grad():
            was_training = svae.training
            svae.eval()
            guess = torch.cat([svae.classify(sample.select(torch.tensor(chunk)).to(svae.device)).argmax(-1).cpu()
                               for chunk in torch.arange(len(positions)).split(256)])
            svae.train(was_training)
        return float((guess == r.argmax(-1)).float().mean())

    def step_kwargs(self, step, size):
        return dict(sizes=self.sizes, beta=self.beta(step), word_keep=self.c.word_keep, info=self.c.class_info)

    def samples(self, n=4):
        """A greedy sentence of each class in turn from z ~ p(z) (forked RNG): the logs' text."""
        was_training = self.svae.training
        self.svae.eval()
        with torch.no_grad(), forked_rng(self.svae.device):
            torch.manual_seed(self.c.seed)
            y = torch.arange(n, device=self.svae.device) % self.svae.classes
            _, tokens = self.svae.decode(y, strategy=Greedy(unk=False), max_len=self.c.max_len + 1)
        self.svae.train(was_training)
        return [f"[{self.labels[int(k)]}] " + self.tokenizer.decode(row.tolist()) for k, row in zip(y, tokens)]

    def validate(self, split, batch_size, world, step):
        m = validate_labeled(self.svae, split, batch_size, self.c.seed)
        columns = {"val_elbo": round(m["elbo"], 4), "val_accuracy": round(m["accuracy"], 4)
                   if m["labeled"] else float("nan")}
        return {**m, "score": m["elbo"], "beta": self.logged_beta(step),
                "columns": columns, "extra": {}}

    def report(self, m):
        accuracy = f", accuracy {m['accuracy']:.3f} on {m['labeled']} labeled" if m["labeled"] else ""
        return [f"val ELBO {m['elbo']:.2f} (labels summed over){accuracy}"]


@torch.no_grad()
def validate_labeled(svae, split, batch_size=64, seed=0):
    """Over ``split``, beta = 1, no subsample scaling: the mean ELBO per sentence with every label
    summed over (as if unknown), and the accuracy of argmax q(y | x) on its labeled sentences.
    Leaves the global RNG as it found it."""
    was_training = svae.training
    svae.eval()
    elbo, right, labeled, n = 0.0, 0, 0, 0
    loss = TraceEnum_ELBO(max_plate_nesting=1)
    with forked_rng(svae.device):
        for i, positions in enumerate(sorted_batches(split, batch_size)):
            torch.manual_seed(seed * 1_000_003 + i)
            batch = gather(split, positions).to(svae.device)
            labels = batch.labels
            if labels is not None:
                known = labels >= 0
                guess = svae.classify(batch).argmax(-1).cpu()
                right += int((guess[known] == labels[known]).sum())
                labeled += int(known.sum())
            hidden = dataclasses.replace(batch, labels=None)
            elbo -= loss.loss(svae.model, svae.guide, hidden)
            n += batch.size
    svae.train(was_training)
    return {"elbo": elbo / max(n, 1), "accuracy": right / labeled if labeled else float("nan"),
            "labeled": labeled, "sentences": n}
