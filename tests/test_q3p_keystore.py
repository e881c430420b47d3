"""Per-link key store: pools, offsets, reuse rejection, capacity, sync, persistence, OTP."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule,
)

from qbb.errors import ConfigError, DecodeError
from qbb.q3p.device import DeviceGroup, QKDDevice, direction_ends
from qbb.q3p.keystore import (
    KeyAlreadyUsed, KeyOutOfRange, KeyStoreConfig, KeyStoreError, KeyUnavailable,
    LinkKeyStore, is_initiator, otp_xor,
)
from qbb.q3p.persist import (
    KeyStoreFile, Marks, decode_marks, decode_store, encode_marks, encode_store,
)

SEED = b"link seed for the key store tests"
SMALL = dict(capacity=2048, dec_slack=512, split_block=32, compact_block=256, lease=300)


def _pair(**overrides) -> tuple[LinkKeyStore, LinkKeyStore]:
    settings_ = {**SMALL, **overrides}
    return (LinkKeyStore(KeyStoreConfig(initiator=True, **settings_)),
            LinkKeyStore(KeyStoreConfig(initiator=False, **settings_)))


def _stream(n: int) -> bytes:
    return QKDDevice(SEED, 0, 0).stream(0, n)


def _accounting_holds(store: LinkKeyStore) -> None:
    """Every byte that reached a pool is consumed, discarded or still there (exactly once)."""
    s, p = store.status(), store.positions()
    assert p.enc_end * 8 == s.enc_consumed_bits + s.enc_discarded_bits + s.enc_level_bits
    assert p.dec_end * 8 == s.dec_consumed_bits + s.dec_discarded_bits + s.dec_level_bits
    assert p.enc_end + p.dec_end == p.ingest
    assert s.enc_level_bits <= s.capacity_bits
    enc, dec = store._enc, store._dec  # noqa: SLF001 - memory bounds are the point here
    assert enc.base + len(enc.buf) == enc.end and dec.base + len(dec.buf) == dec.end
    assert len(enc.buf) <= store.config.capacity + store.config.compact_block
    assert len(dec.buf) <= store.config.capacity + store.config.dec_slack + \
        store.config.compact_block


# -- basics -----------------------------------------------------------------------------

def test_take_get_and_rejections() -> None:
    a, b = _pair(key_ratio=1000)
    data = _stream(1000)
    a.ingest(data)
    b.ingest(data)
    offset, key = a.take(100)
    assert (offset, key) == (0, data[:100])
    assert b.get(0, 100) == key
    assert a.take(50) == (100, data[100:150])
    assert b.get(120, 30) == data[120:150]  # out of order
    assert b.get(100, 20) == data[100:120]
    for request, error in (((0, 100), KeyAlreadyUsed), ((90, 20), KeyAlreadyUsed),
                           ((149, 2), KeyAlreadyUsed), ((990, 20), KeyUnavailable),
                           ((-1, 5), KeyOutOfRange), ((5, 0), KeyOutOfRange),
                           ((True, 5), KeyOutOfRange), ((1 << 64, 1), KeyOutOfRange)):
        with pytest.raises(error):
            b.get(*request)
    for n in (0, -3, 2.0):
        with pytest.raises(KeyOutOfRange):
            a.take(n)
    assert not a.status().starved
    with pytest.raises(KeyUnavailable):
        a.take(851)
    status = a.status()
    assert status.starved and status.rejected == {"take.unavailable": 1, "take.out_of_range": 3}
    assert b.status().rejected == {"get.already_used": 3, "get.unavailable": 1,
                                   "get.out_of_range": 4}
    assert a.take(850)[0] == 150 and not a.status().starved
    with pytest.raises(KeyUnavailable):  # the responder never encrypts with ratio 1000
        b.take(1)


def test_peek_reads_without_using_key() -> None:
    a, b = _pair(key_ratio=1000)
    data = _stream(1000)
    a.ingest(data)
    b.ingest(data)
    offset, key = a.take(64)
    assert b.peek(offset, 64) == key and b.peek(offset, 64) == key  # not used up
    assert b.status().dec_consumed_bits == 0
    assert b.get(offset, 64) == key
    with pytest.raises(KeyAlreadyUsed):
        b.peek(offset, 64)
    with pytest.raises(KeyUnavailable):
        b.peek(990, 20)
    assert b.status().rejected == {"peek.already_used": 1, "peek.unavailable": 1}


def test_directions_follow_the_ratio() -> None:
    a, b = _pair(key_ratio=250, capacity=1 << 20)
    data = _stream(3200)
    a.ingest(data)
    b.ingest(data)
    assert a.positions().enc_end == 800 and b.positions().enc_end == 2400
    assert a.take(800)[1] == b.get(0, 800)
    assert b.take(2400)[1] == a.get(0, 2400)
    for store in (a, b):
        _accounting_holds(store)


def test_capacity_discards_and_bounds_memory() -> None:
    a, b = _pair(key_ratio=500)
    data = _stream(40_000)
    for start in range(0, len(data), 777):
        a.ingest(data[start:start + 777])
    b.ingest(data)
    status = a.status()
    assert status.enc_level_bits == 8 * 2048
    assert status.enc_discarded_bits == 8 * (20_000 - 2048)
    assert b.status().dec_level_bits == 8 * (2048 + 512)
    offset, key = a.take(2048)
    assert b.get(offset, 2048) == key
    with pytest.raises(KeyOutOfRange):
        b.get(offset - 600, 10)
    for store in (a, b):
        _accounting_holds(store)


def test_used_key_is_removed_in_blocks() -> None:
    a, b = _pair(capacity=1 << 20, compact_block=4096)
    data = _stream(200_000)
    a.ingest(data)
    b.ingest(data)
    lengths = []
    for _ in range(150):
        offset, key = a.take(500)
        assert b.get(offset, 500) == key
        lengths.append(len(a._enc.buf))  # noqa: SLF001
    drops = [x - y for x, y in zip(lengths, lengths[1:]) if y < x - 500]
    assert drops and all(d >= 4096 for d in drops)
    assert len(a._enc.buf) > 100_000 - 75_000 - 1  # noqa: SLF001


def test_ingest_positions_overlap_and_gap() -> None:
    a, b = _pair(key_ratio=500, capacity=1 << 20)
    data = _stream(10_000)
    a.ingest(data[:6000])
    a.ingest(data[4000:8000], position=4000)  # overlap: only 6000..8000 are new
    b.ingest(data[:8000])
    assert a.positions() == b.positions()
    offset, key = a.take(100)
    assert b.get(offset, 100) == key
    a.ingest(data[9000:], position=9000)  # a gap of 1000 bytes: everything below retires
    assert a.status().skipped_bits == 8000
    i2r, r2i = direction_ends(9000, 32, 500)
    assert a.positions().enc_next == i2r and a.positions().discarded == r2i
    b.ingest(data[8000:])
    offset, key = a.take(200)
    assert offset >= i2r and b.get(offset, 200) == key


def test_sync_skip_and_retire() -> None:
    a, b = _pair(key_ratio=500, capacity=1 << 20)
    data = _stream(8000)
    a.ingest(data)
    b.ingest(data)
    b.retire_dec_below(1000)
    assert b.discard_below == b.positions().discarded == 1000
    a.skip_enc_to(b.positions().discarded)
    offset, key = a.take(10)
    assert offset == 1000 and b.get(offset, 10) == key
    a.skip_enc_to(10)  # never backwards
    assert a.positions().enc_next == 1010
    for store in (a, b):
        _accounting_holds(store)


def test_status_rates() -> None:
    a, _ = _pair(capacity=1 << 20)
    assert a.status(0.0).ingest_bps == 0
    a.ingest(_stream(10_000))
    first = a.status(1.0).ingest_bps
    assert 0 < first < 80_000
    assert a.status(1.0).ingest_bps == first  # same instant: same reading
    assert a.status(30.0).ingest_bps < first


def test_config_and_roles() -> None:
    assert is_initiator("10.0.0.2", "10.0.0.10") and not is_initiator("10.0.0.10", "10.0.0.2")
    with pytest.raises(ConfigError):
        is_initiator("10.0.0.1", "10.0.0.1")
    for bad in (dict(key_ratio=1001), dict(capacity=0), dict(split_block=-1),
                dict(dec_slack=-1), dict(lease=1.5), dict(compact_block=True)):
        with pytest.raises(ConfigError):
            KeyStoreConfig(initiator=True, **bad)
    with pytest.raises(ConfigError):
        KeyStoreConfig(initiator=1)


# -- OTP --------------------------------------------------------------------------------

@given(st.binary(max_size=300), st.randoms(use_true_random=False))
def test_otp_xor_matches_reference(data: bytes, rnd) -> None:
    pad = bytes(rnd.getrandbits(8) for _ in data)
    expected = bytes(x ^ y for x, y in zip(data, pad))
    assert otp_xor(data, pad) == expected
    assert otp_xor(bytearray(expected), memoryview(pad)) == data


def test_otp_xor_large_and_mismatch() -> None:
    data, pad = _stream(70_000), QKDDevice(SEED, 1, 0).stream(0, 70_000)
    assert otp_xor(data, pad) == bytes(x ^ y for x, y in zip(data, pad))
    with pytest.raises(ValueError):
        otp_xor(b"abc", b"ab")


# -- two ends, random interleavings -------------------------------------------------------

class TwoEnds(RuleBasedStateMachine):
    """Both ends fed by their own (identical) devices, frames delivered in any order."""

    sides = st.sampled_from((0, 1))

    @initialize(ratio=st.integers(0, 1000), capacity=st.sampled_from([700, 2048, 1 << 20]))
    def setup(self, ratio: int, capacity: int) -> None:
        self.stores = _pair(key_ratio=ratio, capacity=capacity)
        self.groups = [DeviceGroup(SEED, [3000, 1100], block_size=8) for _ in range(2)]
        self.now = [0.0, 0.0]
        self.flight: list[tuple[int, int, int, bytes]] = []  # receiver, offset, n, key
        self.delivered: list[tuple[int, int, int]] = []
        self.next_take = [0, 0]
        self.served: list[set[int]] = [set(), set()]  # byte offsets each receiver handed out

    @rule(side=sides, dt=st.floats(0, 1.5))
    def advance(self, side: int, dt: float) -> None:
        self.now[side] += dt
        self.stores[side].ingest(self.groups[side].advance(self.now[side]))

    @rule(side=sides, n=st.integers(1, 300))
    def take(self, side: int, n: int) -> None:
        store = self.stores[side]
        try:
            offset, key = store.take(n)
        except KeyUnavailable:
            assert store.status().enc_level_bits < 8 * n and store.status().starved
            return
        assert offset >= self.next_take[side] and len(key) == n  # never handed out twice
        self.next_take[side] = offset + n
        self.flight.append((1 - side, offset, n, key))

    @precondition(lambda self: self.flight)
    @rule(data=st.data())
    def deliver(self, data) -> None:
        frame = self.flight.pop(data.draw(st.integers(0, len(self.flight) - 1)))
        receiver, offset, n, key = frame
        store = self.stores[receiver]
        try:
            got = store.get(offset, n)
        except KeyUnavailable:
            assert offset + n > store.positions().dec_end
            self.flight.append(frame)  # the receiver has not ingested it yet
            return
        except KeyOutOfRange:
            assert offset < store.positions().discarded  # trimmed by the receive window
            return
        except KeyAlreadyUsed:  # a shifted replay got there first
            assert set(range(offset, offset + n)) & self.served[receiver]
            return
        assert got == key
        used = set(range(offset, offset + n))
        assert not used & self.served[receiver]
        self.served[receiver] |= used
        self.delivered.append((receiver, offset, n))

    @precondition(lambda self: self.delivered)
    @rule(data=st.data(), shift=st.integers(-5, 5))
    def replay(self, data, shift: int) -> None:
        receiver, offset, n = data.draw(st.sampled_from(self.delivered))
        offset = max(0, offset + shift)
        store = self.stores[receiver]
        floor = store.positions().discarded
        try:
            store.get(offset, n)
        except KeyStoreError as error:
            if shift == 0 and offset >= floor:
                assert isinstance(error, KeyAlreadyUsed)
            return
        used = set(range(offset, offset + n))  # shifted onto fresh key: served once, too
        assert shift and not used & self.served[receiver]
        self.served[receiver] |= used

    @precondition(lambda self: self.flight)
    @rule(data=st.data())
    def lose(self, data) -> None:
        self.flight.pop(data.draw(st.integers(0, len(self.flight) - 1)))

    @rule(side=sides)
    def sync(self, side: int) -> None:
        self.stores[side].skip_enc_to(self.stores[1 - side].positions().discarded)

    @invariant()
    def accounting(self) -> None:
        if hasattr(self, "stores"):
            for store in self.stores:
                _accounting_holds(store)

    @invariant()
    def same_time_same_pools(self) -> None:
        if hasattr(self, "stores") and self.now[0] == self.now[1]:
            a, b = (store.positions() for store in self.stores)
            assert (a.ingest, a.enc_end, a.dec_end) == (b.ingest, b.dec_end, b.enc_end)


TwoEnds.TestCase.settings = settings(stateful_step_count=40)
test_two_ends = TwoEnds.TestCase


# -- persistence --------------------------------------------------------------------------

def _persisted(tmp_path, **overrides):
    a, b = _pair(capacity=1 << 20, **overrides)
    data = _stream(60_000)
    a.ingest(data)
    b.ingest(data)
    files = KeyStoreFile(tmp_path / "a.ks"), KeyStoreFile(tmp_path / "b.ks")
    for store, file in zip((a, b), files):
        file.attach(store)
        file.save(store)
    return a, b, files, data


def test_files_are_private_and_atomic(tmp_path) -> None:
    a, _, (file, _), _ = _persisted(tmp_path)
    a.take(10)
    for path in (file.path, file.mark_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["a.ks", "a.ks.mark", "b.ks"]


def test_lease_is_durable_before_key_leaves(tmp_path) -> None:
    a, _, (file, _), _ = _persisted(tmp_path)
    offset, _ = a.take(100)
    assert decode_marks(file.mark_path.read_bytes()) == Marks(1, 100 + 300, None)

    def broken(enc_mark, dec_mark):
        raise OSError("disk full")
    a.set_lease_hook(broken)
    a.take(300)  # within the lease (up to 400): no write needed
    with pytest.raises(OSError):
        a.take(1)
    assert a.positions().enc_next == 400


@settings(max_examples=25)
@given(st.lists(st.tuples(st.sampled_from(["take", "get", "save"]), st.integers(1, 400)),
                max_size=25), st.randoms(use_true_random=False))
def test_crash_never_reuses_key(tmp_path_factory, ops, rnd) -> None:
    tmp_path = tmp_path_factory.mktemp("crash")
    a, b, (file_a, file_b), data = _persisted(tmp_path)
    taken, got = [], []
    for op, n in ops:
        if op == "take":
            taken.append(a.take(n))
        elif op == "get" and taken:
            offset, key = taken.pop(rnd.randrange(len(taken)))
            assert b.get(offset, len(key)) == key
            got.append((offset, len(key)))
        elif op == "save":
            file_a.save(a)
            file_b.save(b)
    high = max((offset + len(key) for offset, key in taken), default=0)
    high = max([high] + [offset + n for offset, n in got])
    a2, b2 = KeyStoreFile(file_a.path).load(), KeyStoreFile(file_b.path).load()  # the crash
    a2.ingest(data, position=0)
    assert a2.take(1)[0] >= high
    for offset, n in got:
        with pytest.raises((KeyAlreadyUsed, KeyOutOfRange)):
            b2.get(offset, n)
    for offset, key in taken:  # in flight at the crash: the receiver may still take them
        try:
            assert b2.get(offset, len(key)) == key
        except KeyOutOfRange:
            pass


def test_clean_save_loses_nothing(tmp_path) -> None:
    a, b, (file_a, file_b), _ = _persisted(tmp_path)
    frames = [a.take(n) for n in (100, 200, 300)]
    b.get(*frames[1][:1], 200)
    file_a.save(a)
    file_b.save(b)
    a2, b2 = file_a.load(), KeyStoreFile(file_b.path).load()
    assert a2.positions() == a.positions() and b2.positions() == b.positions()
    assert a2.snapshot() == a.snapshot() and b2.snapshot() == b.snapshot()
    with pytest.raises(KeyAlreadyUsed):
        b2.get(frames[1][0], 200)
    for offset, key in (frames[0], frames[2]):
        assert b2.get(offset, len(key)) == key
    with pytest.raises(KeyOutOfRange):  # [0, 600) all used: compacted away
        b2.get(frames[1][0], 200)
    assert a2.take(10)[0] == 600
    assert file_a.generation == 3  # saved, saved again, re-saved by load


def test_stale_marks_are_ignored(tmp_path) -> None:
    a, _, (file, _), _ = _persisted(tmp_path)
    a.take(100)  # marks of generation 1
    file.save(a)  # generation 2: the marks file is now stale
    assert KeyStoreFile(file.path).load().positions().enc_next == 100


def test_store_file_round_trip(tmp_path) -> None:
    a, b, (file_a, _), _ = _persisted(tmp_path)
    a.take(77)
    b.get(500, 20)
    b.get(100, 20)
    for store in (a, b):
        raw = encode_store(store.snapshot(), 9)
        state, generation = decode_store(raw)
        assert (state, generation) == (store.snapshot(), 9)
        assert encode_store(state, generation) == raw


def _small_file() -> bytes:
    a, b = _pair()
    a.ingest(_stream(3000))
    b.ingest(_stream(3000))
    b.get(10, 5)
    b.get(40, 5)
    return encode_store(b.snapshot(), 4)


STORE_BYTES = _small_file()
MARK_BYTES = encode_marks(Marks(4, 1000, None))


@given(st.binary(max_size=300))
def test_random_files_raise_decode_error(data: bytes) -> None:
    for decoder in (decode_store, decode_marks):
        try:
            decoder(data)
        except DecodeError:
            pass


@given(st.sampled_from([STORE_BYTES, MARK_BYTES]), st.data())
def test_mutated_files_raise_decode_error(raw: bytes, data) -> None:
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if kind == "flip":
        bit = data.draw(st.integers(0, 8 * len(raw) - 1))
        mutated = bytearray(raw)
        mutated[bit // 8] ^= 1 << bit % 8
    elif kind == "truncate":
        mutated = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        mutated = raw + data.draw(st.binary(min_size=1, max_size=8))
    decoder = decode_store if raw is STORE_BYTES else decode_marks
    with pytest.raises(DecodeError):
        decoder(bytes(mutated))


@given(st.integers(0, (1 << 64) - 1), st.none() | st.integers(0, (1 << 64) - 1),
       st.none() | st.integers(0, (1 << 64) - 1))
def test_marks_round_trip(generation, enc_mark, dec_mark) -> None:
    marks = Marks(generation, enc_mark, dec_mark)
    raw = encode_marks(marks)
    assert len(raw) == 64 and decode_marks(raw) == marks and encode_marks(decode_marks(raw)) == raw
