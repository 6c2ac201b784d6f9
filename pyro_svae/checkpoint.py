"""Atomic writes and safe loads: a crash mid-write never loses the previous file, and a damaged
checkpoint is detected instead of loaded.

A checkpoint is torch.save's zip followed by a trailer line ``#pyro-svae-sha256 <hex>`` holding
the sha256 of everything before it (torch.load ignores bytes after the zip, and does not check
the zip's CRCs itself: a flipped bit in a tensor would otherwise load silently)."""

import contextlib
import errno
import hashlib
import os
import tempfile

import torch

from .errors import SVAEError

TMP_PREFIX = ".tmp-"
TRAILER = b"\n#pyro-svae-sha256 "
TRAILER_SIZE = len(TRAILER) + 64 + 1  # magic, hex digest, newline


def _atomic_write(path, write):
    """Write through ``write(fileobj)`` to a temporary file, fsync it, then rename over ``path``.
    A failure (disk full, ...) removes the temporary file and leaves ``path`` as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX + os.path.basename(path) + "-")
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _write_error(path, e):
    what = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    kept = f"; the previous {os.path.basename(path)} is intact" if os.path.exists(path) else ""
    return SVAEError(f"{path}: could not be written ({what}){kept}")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_temporaries(folder):
    """Delete the temporary files that interrupted atomic writes left in ``folder`` -> how many.
    Only the run's lock holder may call it (another writer's file in flight would go too)."""
    removed = 0
    for name in os.listdir(folder):
        if name.startswith(TMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


def atomic_write_bytes(path, data):
    _atomic_write(path, lambda f: f.write(data))


class _Hashing:
    """A binary file that hashes what is written through it."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data):
        self.sha.update(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def atomic_save(state, path):
    """``state`` holds only tensors, numbers, strings, lists and dicts (loadable with weights_only)."""

    def write(f):
        hashing = _Hashing(f)
        torch.save(state, hashing)
        f.write(TRAILER + hashing.sha.hexdigest().encode() + b"\n")

    _atomic_write(path, write)


def verify(path):
    """True if ``path`` ends with a checksum trailer that matches; False if it has none (written
    before checksums); raises SVAEError if it does not match (truncated or bit-flipped)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size < TRAILER_SIZE:
            return False
        f.seek(size - TRAILER_SIZE)
        trailer = f.read()
        if not trailer.startswith(TRAILER):
            return False
        f.seek(0)
        sha, left = hashlib.sha256(), size - TRAILER_SIZE
        while left:
            block = f.read(min(left, 1 << 22))
            if not block:
                break
            sha.update(block)
            left -= len(block)
    if sha.hexdigest().encode() != trailer[len(TRAILER):-1]:
        raise SVAEError(f"{path}: corrupted (its checksum does not match: truncated or bit-flipped)")
    return True


def load_checkpoint(path, device="cpu", hint=""):
    """The state in ``path``, checked: a one-line SVAEError (ending with ``hint``) for a missing,
    damaged or foreign file."""
    if not os.path.isfile(path):
        raise SVAEError(f"{path}: no such checkpoint{hint}")
    try:
        verify(path)
        state = torch.load(path, map_location=device, weights_only=True)
    except SVAEError as e:
        raise SVAEError(f"{e}{hint}") from None
    except Exception as e:  # truncated file, foreign pickle, not a zip
        raise SVAEError(f"{path}: not a loadable pyro-svae checkpoint, truncated or damaged "
                        f"({e.__class__.__name__}){hint}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise SVAEError(f"{path}: not a pyro-svae checkpoint{hint}")
    return state


def file_sha256(path):
    """The sha256 of a file's bytes, read in 1 MiB blocks (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
