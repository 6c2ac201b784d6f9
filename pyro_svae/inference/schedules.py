"""KL-weight (beta) schedules, as functions of the training step, and the learning rate's.

Written ``name:arg,arg``:  constant[:b]  linear:start,steps  logistic:k,x0  cyclical:cycles,ratio
"""

import dataclasses
import math

from ..errors import SVAEError


@dataclasses.dataclass
class Constant:
    value: float = 1.0

    def __call__(self, step):
        return self.value


@dataclasses.dataclass
class Linear:
    """0 until ``start``, then a straight ramp reaching 1 after ``steps`` more steps."""

    start: float = 0
    steps: float = 10000

    def __call__(self, step):
        return min(1.0, max(0.0, (step - self.start) / max(self.steps, 1)))


@dataclasses.dataclass
class Logistic:
    """Bowman et al.'s sigmoid: 1 / (1 + exp(-k (step - x0)))."""

    k: float = 0.0025
    x0: float = 2500

    def __call__(self, step):
        return 1.0 / (1.0 + math.exp(-self.k * (step - self.x0)))


@dataclasses.dataclass
class Cyclical:
    """Fu et al. 2019: ``cycles`` repeats over ``total`` steps; each ramps 0 -> 1 over the first
    ``ratio`` of the cycle, then holds 1."""

    cycles: float = 4
    ratio: float = 0.5
    total: int = 0

    def __call__(self, step):
        period = self.total / self.cycles
        tau = (step % period) / period
        return min(1.0, tau / self.ratio)


SCHEDULES = {"constant": Constant, "linear": Linear, "logistic": Logistic, "cyclical": Cyclical}


def parse_schedule(spec, total_steps=None):
    name, _, args = spec.partition(":")
    if name not in SCHEDULES:
        raise SVAEError(f"unknown KL schedule {spec!r}; valid: {', '.join(SCHEDULES)}")
    try:
        values = [float(a) for a in args.split(",")] if args else []
        schedule = SCHEDULES[name](*values)
    except (ValueError, TypeError):
        raise SVAEError(f"bad KL schedule {spec!r}; e.g. constant:1, linear:0,10000, "
                        "logistic:0.0025,2500, cyclical:4,0.5") from None
    if isinstance(schedule, Cyclical):
        if not total_steps:
            raise SVAEError("the cyclical KL schedule needs --max-steps or --max-epochs")
        if schedule.cycles <= 0 or not 0 < schedule.ratio <= 1:
            raise SVAEError(f"bad KL schedule {spec!r}: cycles > 0 and 0 < ratio <= 1")
        schedule.total = int(total_steps)
    return schedule


LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(name, step, total):
    """The learning rate's multiplier at ``step`` (0-based) of ``total``: 1 throughout (constant), or
    falling from 1 to 0 over the run, in a straight line (linear) or half a cosine (cosine)."""
    if name == "constant":
        return 1.0
    done = min(step / max(total, 1), 1.0)
    return 1.0 - done if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * done))
