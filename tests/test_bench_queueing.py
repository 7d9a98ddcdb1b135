"""The Server scenario's ceiling (`bench/queueing.py`) against what queueing theory says in closed form."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from queueing import ceiling_rate, sojourns


@pytest.mark.parametrize("load", [0.5, 0.8])
def test_one_server_matches_pollaczek_khinchine(load: float) -> None:
    """M/D/1: mean time in system S + ρS / (2(1 − ρ)), and a fraction 1 − ρ of requests never wait."""
    arrivals = np.cumsum(np.random.default_rng(1).exponential(1.0 / load, 200_000))
    times = sojourns(arrivals, 1.0, 1)
    assert times.mean() == pytest.approx(1.0 + load / (2 * (1 - load)), rel=0.03)
    assert np.isclose(times, 1.0).mean() == pytest.approx(1 - load, abs=0.01)


def test_ceiling_sits_where_the_p99_meets_the_bound() -> None:
    service, servers, bound = 5.0, 2, 25.0
    rate = ceiling_rate(service, servers, bound)
    assert 0.5 < rate * service / (1000 * servers) < 0.95  # a load below saturation, above idle
    gaps = np.random.default_rng(2).exponential(1000.0, 100_000)  # fresh arrivals, not the search's

    def p99(at: float) -> float:
        return np.percentile(sojourns(np.cumsum(gaps / at), service, servers), 99)

    assert p99(0.95 * rate) <= bound < p99(1.05 * rate)  # 5% under the ceiling passes, 5% over fails
    assert ceiling_rate(service, servers, 2 * bound) > rate  # a looser bound allows more
