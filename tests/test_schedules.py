import pytest

from pyro_svae.errors import SVAEError
from pyro_svae.inference.schedules import parse_schedule


def test_schedule_values():
    assert parse_schedule("constant")(123) == 1.0
    assert parse_schedule("constant:0.5")(0) == 0.5
    lin = parse_schedule("linear:100,200")
    assert [lin(s) for s in (0, 100, 200, 300, 1000)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    log = parse_schedule("logistic:0.01,500")
    assert log(500) == pytest.approx(0.5)
    assert log(600) == pytest.approx(1 / (1 + 2.718281828459045 ** -1))
    cyc = parse_schedule("cyclical:4,0.5", total_steps=400)  # period 100, ramp over 50
    assert [cyc(s) for s in (0, 25, 50, 99, 100, 125)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]


@pytest.mark.parametrize("spec", ["bogus", "linear:a,b", "cyclical:4,0.5", "cyclical:0,0.5"])
def test_bad_schedules(spec):
    with pytest.raises(SVAEError):
        parse_schedule(spec, total_steps=None if spec == "cyclical:4,0.5" else 100)
