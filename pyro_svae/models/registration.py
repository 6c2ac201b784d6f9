"""Registering the networks' parameters with Pyro: ``pyro.module`` at every call, except inside
``known_params()``, where the caller already holds the parameters (a training step after the
first: ``DeviceSVI`` traced them once and its optimizer owns them). ``pyro.module`` walks every
parameter of a network and sends each through Pyro's effect stack (18 ``pyro.param`` messages for
the sentence VAE), which is most of what a step costs beyond its arithmetic when that is cheap."""

from contextlib import contextmanager

import pyro

_known = False


def module(name, network):
    """``pyro.module(name, network)``, or nothing inside ``known_params()``. -> network."""
    if not _known:
        pyro.module(name, network)
    return network


@contextmanager
def known_params():
    """The parameters are known to the caller: ``module`` registers nothing while this is open."""
    global _known
    outer, _known = _known, True
    try:
        yield
    finally:
        _known = outer
