"""Choosing the device: auto picks CUDA when it is there."""

import torch

from .errors import SVAEError


def resolve_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SVAEError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SVAEError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def forked_rng(device):
    """A context in which random draws leave the global RNG (CPU, and ``device`` if CUDA) untouched."""
    return torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else [])
