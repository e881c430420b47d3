"""The load-state database's low-pass filter (seed 002 eq. 1-2)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from qbb.errors import ConfigError
from qbb.netlayer.loadstate import LoadStateConfig, LoadStateDB


def reference(per_interval_bits: list[int], interval: float, w: float) -> float:
    """Eq. 1 stepped once per interval, l_i = bits / interval (eq. 2)."""
    load = 0.0
    for bits in per_interval_bits:
        load = (1 - 1 / w) * load + (bits / interval) / w
    return load


def test_constant_rate_converges_to_that_rate():
    db = LoadStateDB(LoadStateConfig(interval=0.1, window=4))
    for step in range(200):
        db.record("if", 1000, step * 0.1 + 0.05)  # 1000 bits per 0.1 s = 10 kbit/s
    assert db.load("if", 20.0) == pytest.approx(10_000, rel=1e-6)


def test_load_is_that_of_the_last_completed_interval():
    db = LoadStateDB(LoadStateConfig(interval=1.0, window=2))
    db.record("if", 800, 0.5)
    assert db.load("if", 0.9) == 0.0 and db.pending_bits("if", 0.9) == 800
    assert db.load("if", 1.0) == pytest.approx(400.0)  # (1 - 1/2) 0 + 800/1/2
    assert db.load("if", 2.0) == pytest.approx(200.0)  # an idle interval halves it


def test_idle_gap_decays_in_closed_form():
    db = LoadStateDB(LoadStateConfig(interval=0.5, window=8))
    db.record("x", 4000, 0.1)
    expected = reference([4000] + [0] * 9, 0.5, 8)
    assert db.load("x", 5.0) == pytest.approx(expected)


def test_interfaces_are_independent_and_totals_kept():
    db = LoadStateDB()
    db.record("a", 100, 0.0)
    db.record("a", 50, 0.01)
    assert db.load("b", 1.0) == 0.0
    assert db.total_bits("a") == 150 and db.total_bits("zzz") == 0
    assert set(db.snapshot(1.0)) == {"a", "b"}
    db.forget("a")
    assert db.total_bits("a") == 0


def test_w_one_is_the_plain_last_interval_rate():
    db = LoadStateDB(LoadStateConfig(interval=0.25, window=1))
    db.record("i", 500, 0.1)
    assert db.load("i", 0.3) == pytest.approx(2000.0)


@pytest.mark.parametrize("kwargs", [dict(interval=0), dict(interval=math.nan),
                                    dict(window=0.5), dict(window=math.inf)])
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        LoadStateConfig(**kwargs)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=40),
       st.sampled_from([0.05, 0.1, 1.0]), st.floats(1, 64))
def test_matches_equation_one_step_by_step(bits, interval, w):
    db = LoadStateDB(LoadStateConfig(interval=interval, window=w))
    for step, amount in enumerate(bits):
        db.record("i", amount, (step + 0.5) * interval)
    assert db.load("i", len(bits) * interval + interval / 2) == \
        pytest.approx(reference(bits, interval, w), rel=1e-9, abs=1e-6)
