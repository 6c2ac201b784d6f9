"""Atomic writes and safe loads: a crash mid-write never loses the previous file."""

import contextlib
import os
import tempfile

import torch

from .errors import SVAEError


def _atomic_write(path, write):
    """Write through ``write(fileobj)`` to a temporary file, fsync it, then rename over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path) + "-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data):
    _atomic_write(path, lambda f: f.write(data))


def atomic_save(state, path):
    """``state`` holds only tensors, numbers, strings, lists and dicts (loadable with weights_only)."""
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, device="cpu"):
    if not os.path.isfile(path):
        raise SVAEError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, not a zip
        raise SVAEError(f"{path}: not a loadable pyro-svae checkpoint ({e.__class__.__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise SVAEError(f"{path}: not a pyro-svae checkpoint")
    return state
