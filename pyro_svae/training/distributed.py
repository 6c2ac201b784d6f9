"""Data-parallel training across processes with torch.distributed (launched by ``torchrun``).

Every process holds the whole model and computes the gradient of the ELBO on its share of
the global minibatch; the gradients are summed across processes (weighted by share size) before
the optimizer step, so every process takes the same step as one process on the whole batch.
``gloo`` on CPU, ``nccl`` on CUDA (one GPU per process). Process 0 alone writes the run.
"""

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..errors import SVAEError


@dataclasses.dataclass
class World:
    """This process's place: rank in [0, size), and local_rank on its machine (its GPU)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1

    def shard(self, positions):
        """This process's share of a global batch [B]: every size-th sentence, from its rank
        (batches are length-sorted, so the shares have similar lengths)."""
        return positions[self.rank :: self.size]

    # -- collectives (no-ops in one process) ------------------------------------------------
    def sum(self, values, device):
        """Sum a list of floats over processes (in float64)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def sum_grads(self, params, weight, extras=None):
        """grad <- sum over processes of weight * grad, for every parameter (missing grads are 0).
        ``extras``: a 1-d tensor summed in the same all-reduce (one collective per step) and
        returned, still on the device."""
        if not self.distributed:
            return extras
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _flatten_dense_tensors(grads).mul_(weight)
        if extras is not None:
            flat = torch.cat([flat, extras.to(flat.dtype)])
        dist.all_reduce(flat)
        n = flat.numel() - (extras.numel() if extras is not None else 0)
        for p, g in zip(params, _unflatten_dense_tensors(flat[:n], grads)):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)
        return flat[n:] if extras is not None else None

    def broadcast_params(self, module):
        """Every process starts from process 0's weights."""
        if self.distributed:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def gather(self, obj):
        """[obj of process 0, obj of process 1, ...] on every process."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Process 0's ``obj`` on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, 0)
        return box[0]


def launched():
    """True inside a torchrun worker."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def several_processes():
    """True inside a torchrun worker of a run with more than one process."""
    return launched() and int(os.environ["WORLD_SIZE"]) > 1


def join(device):
    """Join the process group that torchrun set up (a no-op outside torchrun). ``device``: the
    requested device ('auto', 'cpu', 'cuda', ...). -> (World, the device this process uses)."""
    from ..devices import resolve_device

    if not several_processes():
        return World(), resolve_device(device)
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise SVAEError(f"process {world.rank} has local rank {world.local_rank} but this machine has "
                            f"{torch.cuda.device_count()} GPU(s); give --nproc-per-node at most that")
        resolved = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        # long enough for process 0 to prepare a large raw corpus while the others wait for it
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=12),
                                **({"device_id": resolved} if resolved.type == "cuda" else {}))
    return world, resolved


def leave():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
