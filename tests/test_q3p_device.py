"""Emulated QKD devices: key stream, accrual, rate changes and the merged multi-device order."""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import ConfigError
from qbb.q3p.device import (
    RATIO_SCALE, DeviceGroup, QKDDevice, device_key, direction_ends, split_stream,
)

SEED = b"link seed for the device tests"

rates = st.one_of(st.integers(0, 2000), st.floats(0, 2000, allow_nan=False))
times = st.floats(0, 5, allow_nan=False)


def _reference_stream(key: bytes, position: int, n: int) -> bytes:
    """AES-256 in ECB over the big-endian block counters: the CTR keystream by definition."""
    first, last = position // 16, (position + n + 15) // 16
    blocks = b"".join(i.to_bytes(16, "big") for i in range(first, last))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    stream = ecb.update(blocks) + ecb.finalize()
    return stream[position % 16:position % 16 + n]


def test_device_key_derivation() -> None:
    expected = hashlib.sha256(b"qbb/q3p/device/v1" + (3).to_bytes(4, "big") + SEED).digest()
    assert device_key(SEED, 3) == expected
    assert device_key(SEED, 0) != device_key(SEED, 1) != device_key(SEED + b"x", 1)


@given(st.integers(0, 5000), st.integers(0, 300), st.integers(0, 3))
def test_stream_random_access_matches_reference(position: int, n: int, index: int) -> None:
    device = QKDDevice(SEED, index, 1000)
    assert device.stream(position, n) == _reference_stream(device_key(SEED, index), position, n)


def test_stream_sequential_reads_reuse_the_counter() -> None:
    device = QKDDevice(SEED, 0, 1000)
    parts = [device.stream(0, 5), device.stream(5, 30), device.stream(35, 1), device.stream(36, 64)]
    assert b"".join(parts) == QKDDevice(SEED, 0, 1000).stream(0, 100)
    assert device.stream(7, 9) == parts[1][2:11]


@given(rates, st.lists(times, max_size=12))
def test_advance_total_is_independent_of_call_times(rate: float, calls: list[float]) -> None:
    device = QKDDevice(SEED, 0, rate)
    out = b"".join(device.advance(t) for t in sorted(calls)) + device.advance(5)
    assert len(out) == math.floor(Fraction(rate) * 5 / 8)
    assert out == device.stream(0, len(out))


@given(rates, rates, st.floats(0, 4), st.lists(times, max_size=8), st.lists(times, max_size=8))
def test_rate_change_keeps_accrual(rate0: float, rate1: float, change: float,
                                   calls_a: list[float], calls_b: list[float]) -> None:
    outs = []
    for calls in (calls_a, calls_b):
        device, out, changed = QKDDevice(SEED, 1, rate0), [], False
        for t in sorted(calls + [5.0]):
            if not changed and t >= change:
                device.set_rate(rate1, change)
                changed = True
            out.append(device.advance(t))
        outs.append(b"".join(out))
    bits = Fraction(rate0) * Fraction(change) + Fraction(rate1) * (5 - Fraction(change))
    assert outs[0] == outs[1] == QKDDevice(SEED, 1, 0).stream(0, math.floor(bits / 8))


def test_rate_zero_stops_and_bad_settings_are_refused() -> None:
    device = QKDDevice(SEED, 0, 800)
    assert len(device.advance(1)) == 100
    device.set_rate(0, 1)
    assert device.advance(100) == b""
    for bad in (-1, math.nan, math.inf, "fast", True):
        with pytest.raises(ConfigError):
            device.set_rate(bad, 100)
    with pytest.raises(ValueError):
        device.set_rate(10, 0.5)  # before the previous change (t=1)
    for seed, index in ((b"", 0), ("text", 0), (SEED, -1), (SEED, 1 << 32)):
        with pytest.raises(ConfigError):
            QKDDevice(seed, index, 1)
    with pytest.raises(ConfigError):
        DeviceGroup(SEED, [])
    with pytest.raises(ConfigError):
        DeviceGroup(SEED, [1.0], block_size=0)


# -- several devices per link -----------------------------------------------------------------

schedules = st.lists(st.tuples(times, st.integers(0, 2), rates), max_size=5)


def _reference_merge(initial, schedule, block_size, end) -> bytes:
    """All blocks completed by ``end``, sorted by (completion time, device, block)."""
    entries = []
    for index, rate in enumerate(initial):
        segments = [(Fraction(0), Fraction(0), Fraction(rate))]
        for when, dev, new_rate in schedule:
            if dev == index:
                t0, bits0, old = segments[-1]
                segments.append((Fraction(when), bits0 + old * (Fraction(when) - t0),
                                 Fraction(new_rate)))
        for block in range(10 ** 6):
            done = _completion(segments, 8 * block_size * (block + 1))
            if done is None or done > Fraction(end):
                break
            entries.append((done, index, block))
    devices = [QKDDevice(SEED, index, 0) for index in range(len(initial))]
    return b"".join(devices[d].stream(k * block_size, block_size) for _, d, k in sorted(entries))


def _completion(segments, target):
    for i, (t0, bits0, rate) in enumerate(segments):
        if target <= bits0:
            return t0
        t_next = segments[i + 1][0] if i + 1 < len(segments) else None
        if rate and (t_next is None or bits0 + rate * (t_next - t0) >= target):
            return t0 + (target - bits0) / rate
    return None


def _drive(initial, schedule, block_size, calls) -> bytes:
    """One end: apply the rate schedule and advance at ``calls``; everything up to t=5."""
    group, out = DeviceGroup(SEED, initial, block_size=block_size), []
    events = sorted([(t, 1, None) for t in calls] + [(t, 0, i) for i, (t, _, _) in
                                                     enumerate(schedule)], key=lambda e: e[:2])
    for when, kind, item in events + [(5.0, 1, None)]:
        if kind:
            out.append(group.advance(when))
        else:
            _, dev, rate = schedule[item]
            group.set_rate(dev, rate, when)
    assert group.position == sum(map(len, out))
    return b"".join(out)


@given(st.lists(rates, min_size=1, max_size=3), schedules, st.integers(2, 16),
       st.lists(times, max_size=8), st.lists(times, max_size=8))
def test_group_ends_agree_whenever_they_advance(initial, schedule, block_size, calls_a,
                                                calls_b) -> None:
    schedule = sorted(((t, d % len(initial), r) for t, d, r in schedule), key=lambda e: e[0])
    end_a = _drive(initial, schedule, block_size, calls_a)
    end_b = _drive(initial, schedule, block_size, calls_b)
    assert end_a == end_b == _reference_merge(initial, schedule, block_size, 5.0)


def test_group_tie_goes_to_the_lower_device_index() -> None:
    group = DeviceGroup(SEED, [80, 80], block_size=10)  # one block per device per second
    out = group.advance(2)
    dev0, dev1 = QKDDevice(SEED, 0, 0), QKDDevice(SEED, 1, 0)
    assert out == dev0.stream(0, 10) + dev1.stream(0, 10) + dev0.stream(10, 10) + \
        dev1.stream(10, 10)
    assert group.rate_bps == 160


@given(st.lists(rates, min_size=1, max_size=3), times, st.integers(1, 16))
def test_group_skip_drops_a_prefix(initial, skip_at, block_size) -> None:
    full = DeviceGroup(SEED, initial, block_size=block_size).advance(5)
    group = DeviceGroup(SEED, initial, block_size=block_size)
    position = group.skip(skip_at)
    assert group.advance(5) == full[position:]
    assert group.position == len(full)


# -- the split into the two directions ----------------------------------------------------

@given(st.binary(max_size=600), st.integers(0, 3000), st.integers(1, 40),
       st.integers(0, RATIO_SCALE), st.lists(st.integers(0, 600), max_size=5))
def test_split_matches_per_byte_reference(data, position, block, ratio, cuts) -> None:
    i2r, r2i = bytearray(), bytearray()
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for lo, hi in zip(bounds, bounds[1:]):
        parts = split_stream(data[lo:hi], position + lo, block, ratio)
        i2r += b"".join(parts[0])
        r2i += b"".join(parts[1])
    ref = ([], [])
    for i, byte in enumerate(data):
        j = (position + i) // block
        ref[0 if (j + 1) * ratio // RATIO_SCALE > j * ratio // RATIO_SCALE else 1].append(byte)
    assert (bytes(i2r), bytes(r2i)) == (bytes(ref[0]), bytes(ref[1]))
    start, end = direction_ends(position, block, ratio), direction_ends(position + len(data),
                                                                       block, ratio)
    assert (end[0] - start[0], end[1] - start[1]) == (len(i2r), len(r2i))
    assert sum(direction_ends(position, block, ratio)) == position
