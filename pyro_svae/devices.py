"""Choosing the device: auto picks CUDA when it is there."""

import platform

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


def cpu_name():
    """This machine's CPU model (/proc/cpuinfo), for benchmark reports."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def forked_rng(device):
    """A context in which random draws leave the global RNG (CPU, and ``device`` if CUDA) untouched."""
    return torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else [])


def bf16_supported(device):
    """Whether ``--amp bf16`` can run here: any CUDA device, or a CPU with bf16 instructions
    (AVX512-BF16 or AMX; oneDNN's LSTM has no bf16 kernel without them)."""
    return torch.device(device).type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_amp(amp, device):
    if amp == "bf16" and not bf16_supported(device):
        raise SVAEError("--amp bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX); use --amp off")
