"""Training objectives beyond Pyro's ELBOs: free bits (Kingma et al. 2016)."""

from pyro.distributions.kl import kl_divergence
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import torch_item

from .errors import SVAEError


class FreeBitsELBO(TraceMeanField_ELBO):
    """The mean-field ELBO with a KL floor per latent dimension: the KL of dimension d, averaged
    over the minibatch, counts as at least ``free_bits`` nats. Below the floor the KL term has no
    gradient, so the encoder is free to use those nats (a remedy for posterior collapse).

    Needs the diagonal guide (the per-dimension KL is analytic there)."""

    def __init__(self, free_bits, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = free_bits

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = model_trace.nodes["x"]["log_prob_sum"]  # scaled by the plate
        if "z" in guide_trace.nodes:
            q, p = guide_trace.nodes["z"]["fn"], model_trace.nodes["z"]["fn"]
            if not hasattr(q, "base_dist") or not hasattr(q.base_dist, "scale"):
                raise SVAEError("--free-bits needs the diag guide")
            kl_dims = kl_divergence(q.base_dist, p.base_dist)  # [B, Z]
            scale = guide_trace.nodes["z"]["scale"]  # beta * corpus / batch
            elbo = elbo - scale * kl_dims.shape[0] * kl_dims.mean(0).clamp(min=self.free_bits).sum()
        return -torch_item(elbo), -elbo
