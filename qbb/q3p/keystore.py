"""Per-link key store of the Q3P link layer (seed 002 §2.5; seed 001 §III-A/B, Fig. 4).

The merged device stream of a link (:class:`qbb.q3p.device.DeviceGroup`) is identical at both
ends.  The store cuts it into the key of the two directions with
:func:`qbb.q3p.device.split_stream` (fixed blocks, ``key_ratio`` per mille of them for the
initiator -> responder direction, spread evenly).  The initiator (lower node id,
:func:`is_initiator`) encrypts with the first direction, the responder decrypts with it:
a node's encryption pool is its neighbour's decryption pool (seed 001 "key sorting").

Each direction has its own absolute byte-offset space, a function of the merged stream
position only, so both ends agree on the offset of every key byte.  Offsets never move back.

* Encryption pool (sender): ``take(n)`` hands out ``[next, next + n)`` and moves ``next``.
  At most ``capacity`` unused bytes are held; the excess of new key is discarded and counted.
  The discarded bytes are taken at the low end of the window (``next`` jumps): all key bytes
  are equally random, and the pool stays one contiguous range ``[next, end)``.
* Decryption pool (receiver): ``get(offset, n)`` serves any unused range; frames arrive out
  of order, so used ranges are kept in a sorted interval set.  Key below ``floor``
  (``discarded``) is gone; the pool keeps the newest ``capacity + dec_slack`` bytes, the
  slack covering frames in flight and the skew between the two ends' ingest.
* Used key leaves memory in blocks of ``compact_block`` bytes, not per frame (seed 001
  Fig. 4(b)): each pool is a ``bytearray`` with a base offset; the prefix is deleted only
  when the dead part exceeds the block.
* Persistence leases (``docs/keystore.md``): with a lease hook installed, the store calls
  ``hook(enc_mark, dec_mark)`` *before* handing out key beyond the last mark; the hook must
  make the marks durable (:mod:`qbb.q3p.persist`).
"""

from __future__ import annotations

import bisect
import ipaddress
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from qbb.errors import ConfigError, QbbError
from qbb.q3p.device import RATIO_SCALE, direction_ends, split_stream

MAX_OFFSET = 1 << 64  # offsets travel as u64 in the Q3P header
LeaseHook = Callable[[int | None, int | None], None]


class KeyStoreError(QbbError):
    """A key request the store refuses; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class KeyUnavailable(KeyStoreError):
    """Not enough key yet (encryption pool short, or range beyond what was ingested)."""


class KeyAlreadyUsed(KeyStoreError):
    """The range overlaps key that was already used (a replay or duplicate)."""


class KeyOutOfRange(KeyStoreError):
    """A malformed range, or one below the retained window (key used or discarded)."""


def _positive(name: str, value: int, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 1 << 62:
        raise ConfigError(f"key store {name} must be an int >= {low}, got {value!r}")


@dataclass(frozen=True)
class KeyStoreConfig:
    """Settings of one end's store; ``key_ratio`` and ``split_block`` must match the peer's."""

    initiator: bool
    key_ratio: int = 500  # per mille of new key for the initiator's encryption pool
    capacity: int = 64 << 20  # bytes of unused key per pool
    dec_slack: int = 4 << 20  # extra bytes the decryption pool keeps
    split_block: int = 1024
    compact_block: int = 1 << 20
    lease: int = 256 << 10  # bytes leased ahead per durable mark (see persist)

    def __post_init__(self) -> None:
        if not isinstance(self.initiator, bool):
            raise ConfigError(f"initiator must be a bool, got {self.initiator!r}")
        _positive("key_ratio", self.key_ratio, 0)
        if self.key_ratio > RATIO_SCALE:
            raise ConfigError(f"key_ratio {self.key_ratio} exceeds {RATIO_SCALE} per mille")
        for name in ("capacity", "split_block", "compact_block", "lease"):
            _positive(name, getattr(self, name))
        _positive("dec_slack", self.dec_slack, 0)


def is_initiator(local_id: str, peer_id: str) -> bool:
    """The end with the numerically lower node address is the initiator."""
    if local_id == peer_id:
        raise ConfigError(f"a link needs two distinct node ids, got {local_id} twice")
    return ipaddress.IPv4Address(local_id) < ipaddress.IPv4Address(peer_id)


def _tail(parts: list, skip: int) -> bytearray:
    out = bytearray()
    for part in parts:
        if skip >= len(part):
            skip -= len(part)
            continue
        out += part[skip:] if skip else part
        skip = 0
    return out


class _EncPool:
    """Sender side: unused key is ``[next, end)``; ``buf`` holds ``[base, end)``."""

    def __init__(self, capacity: int, compact_block: int, start: int = 0) -> None:
        self.capacity, self.compact_block = capacity, compact_block
        self.buf, self.base, self.end, self.next = bytearray(), start, start, start
        self.discarded = 0

    @property
    def level(self) -> int:
        return max(0, self.end - self.next)

    def append(self, parts: list, total: int) -> None:
        end, new_end = self.end, self.end + total
        usable_new = max(0, new_end - max(self.next, end))
        new_next = max(self.next, new_end - self.capacity)
        self.discarded += total - usable_new + (new_next - self.next)
        self.next, self.end = new_next, new_end
        if new_next >= new_end:
            self.buf, self.base = bytearray(), new_end
        elif new_next >= end:
            self.buf, self.base = _tail(parts, new_next - end), new_next
        else:
            for part in parts:
                self.buf += part
            self.compact()

    def take(self, n: int) -> tuple[int, bytes]:
        offset, start = self.next, self.next - self.base
        key = bytes(self.buf[start:start + n])
        self.next += n
        self.compact()
        return offset, key

    def skip_to(self, offset: int) -> None:
        if offset <= self.next:
            return
        self.discarded += max(0, min(offset, self.end) - self.next)
        self.next = offset
        self.compact()

    def compact(self) -> None:
        cut = min(self.next, self.end)
        if cut - self.base >= self.compact_block or cut == self.end:
            del self.buf[:cut - self.base]
            self.base = cut


class _DecPool:
    """Receiver side: key in ``[floor, end)`` minus the used intervals ``starts/ends``."""

    def __init__(self, window: int, compact_block: int, start: int = 0) -> None:
        self.window, self.compact_block = window, compact_block
        self.buf, self.base, self.end, self.floor = bytearray(), start, start, start
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.used = 0  # bytes in the intervals
        self.highest = start  # highest end of a served range
        self.discarded = 0

    @property
    def level(self) -> int:
        return max(0, self.end - self.floor) - self.used

    def append(self, parts: list, total: int) -> None:
        end, new_end = self.end, self.end + total
        self.discarded += total - max(0, new_end - max(self.floor, end))
        self.end = new_end
        if self.floor >= new_end:
            self.buf, self.base = bytearray(), new_end
        elif self.floor >= end:
            self.buf, self.base = _tail(parts, self.floor - end), self.floor
        else:
            for part in parts:
                self.buf += part
        self.retire(new_end - self.window)

    def check(self, offset: int, n: int) -> None:
        if offset < self.floor:
            raise KeyOutOfRange(f"range {offset}+{n} is below the retained window {self.floor}")
        if offset + n > self.end:
            raise KeyUnavailable(f"range {offset}+{n} is beyond the key received ({self.end})")
        i = bisect.bisect_right(self.starts, offset) - 1
        if (i >= 0 and self.ends[i] > offset) or \
                (i + 1 < len(self.starts) and self.starts[i + 1] < offset + n):
            raise KeyAlreadyUsed(f"range {offset}+{n} overlaps key already used")

    def get(self, offset: int, n: int) -> bytes:
        start = offset - self.base
        key = bytes(self.buf[start:start + n])
        self._mark_used(offset, offset + n)
        self.highest = max(self.highest, offset + n)
        self.compact()
        return key

    def _mark_used(self, lo: int, hi: int) -> None:
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(starts, lo)
        left = i > 0 and ends[i - 1] == lo
        right = i < len(starts) and starts[i] == hi
        if left and right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif left:
            ends[i - 1] = hi
        elif right:
            starts[i] = lo
        else:
            starts.insert(i, lo)
            ends.insert(i, hi)
        self.used += hi - lo

    def _prune(self, below: int) -> int:
        """Drop the used intervals below ``below``; the used bytes removed."""
        i = bisect.bisect_right(self.ends, below)
        removed = sum(self.ends[:i]) - sum(self.starts[:i])
        del self.starts[:i], self.ends[:i]
        if self.starts and self.starts[0] < below:
            removed += below - self.starts[0]
            self.starts[0] = below
        self.used -= removed
        return removed

    def retire(self, below: int) -> None:
        """Give up all key below ``below``; unused bytes count as discarded."""
        if below <= self.floor:
            return
        span = max(0, min(below, self.end) - self.floor)
        self.discarded += span - self._prune(below)
        self.floor = below
        self.compact()

    def compact(self) -> None:
        dead = self.floor
        if self.starts and self.starts[0] == dead:
            dead = self.ends[0]
        dead = min(dead, self.end)
        if dead - self.base >= self.compact_block or dead == self.end:
            if dead > self.floor:
                self._prune(dead)
                self.floor = dead
            del self.buf[:dead - self.base]
            self.base = dead


@dataclass(frozen=True)
class KeyStorePositions:
    """Where the store stands (the numbers a SYNC message carries)."""

    ingest: int  # merged device stream position
    enc_next: int  # next offset take() hands out
    enc_end: int
    dec_next: int  # highest end of a range served by get()
    dec_end: int
    discarded: int  # decryption key below this offset is gone


@dataclass(frozen=True)
class KeyStoreStatus:
    """Levels, rates and counters (bits) for monitoring and flow control."""

    enc_level_bits: int
    dec_level_bits: int
    capacity_bits: int
    starved: bool  # the last take() found the encryption pool short
    ingest_bps: float
    enc_consume_bps: float
    dec_consume_bps: float
    ingested_bits: int
    discarded_bits: int
    enc_discarded_bits: int
    dec_discarded_bits: int
    skipped_bits: int  # merged-stream key never ingested (a gap, e.g. a restart)
    enc_consumed_bits: int
    dec_consumed_bits: int
    rejected: Mapping[str, int] = field(default_factory=dict)


class _Rate:
    """Exponentially smoothed rate of a growing counter, sampled at ``status(now)``."""

    def __init__(self, tau: float = 10.0) -> None:
        self.tau, self.value, self.last = tau, 0.0, None

    def sample(self, total: int, now: float) -> float:
        if self.last is not None and now > self.last[0]:
            dt = now - self.last[0]
            weight = 1.0 - math.exp(-dt / self.tau)
            self.value += weight * ((total - self.last[1]) / dt - self.value)
        if self.last is None or now > self.last[0]:
            self.last = (now, total)
        return self.value


@dataclass(frozen=True)
class KeyStoreState:
    """Everything :mod:`qbb.q3p.persist` saves: unused key, offsets, used ranges, counters."""

    config: KeyStoreConfig
    position: int
    enc_next: int
    enc_end: int
    enc_key: bytes  # [enc_next, enc_end)
    dec_floor: int
    dec_end: int
    dec_highest: int
    dec_key: bytes  # [dec_floor, dec_end)
    dec_used: tuple[tuple[int, int], ...]  # sorted, disjoint, within [dec_floor, dec_end)
    counters: tuple[int, ...]  # ingested, skipped, enc/dec discarded, enc/dec consumed


class LinkKeyStore:
    """One node's key store for one QBB link (sans-IO)."""

    def __init__(self, config: KeyStoreConfig) -> None:
        self.config = config
        self.position = 0
        self._enc = _EncPool(config.capacity, config.compact_block)
        self._dec = _DecPool(config.capacity + config.dec_slack, config.compact_block)
        self._ingested = self._skipped = self._enc_consumed = self._dec_consumed = 0
        self._rejected: Counter[str] = Counter()
        self._starved = False
        self._lease_hook: LeaseHook | None = None
        self._enc_mark: int | None = None
        self._dec_mark: int | None = None
        self._rates = (_Rate(), _Rate(), _Rate())

    # -- key in ------------------------------------------------------------------------

    def ingest(self, data: bytes, position: int | None = None) -> None:
        """Add merged device-stream bytes that start at ``position`` (default: contiguous)."""
        if position is not None and position != self.position:
            if position > self.position:
                self._jump(position)
            else:
                data = memoryview(data)[self.position - position:]
        if not len(data):
            return
        cfg = self.config
        i2r, r2i = split_stream(data, self.position, cfg.split_block, cfg.key_ratio)
        enc, dec = (i2r, r2i) if cfg.initiator else (r2i, i2r)
        self._enc.append(enc, sum(len(part) for part in enc))
        self._dec.append(dec, sum(len(part) for part in dec))
        self.position += len(data)
        self._ingested += len(data)

    def _jump(self, position: int) -> None:
        """A gap in the merged stream: all key below it is given up at both pools."""
        i2r, r2i = direction_ends(position, self.config.split_block, self.config.key_ratio)
        enc_end, dec_end = (i2r, r2i) if self.config.initiator else (r2i, i2r)
        self._enc.skip_to(enc_end)
        self._enc.buf, self._enc.base, self._enc.end = bytearray(), enc_end, enc_end
        self._dec.retire(dec_end)
        self._dec.buf, self._dec.base, self._dec.end = bytearray(), dec_end, dec_end
        self._skipped += position - self.position
        self.position = position

    # -- key out -----------------------------------------------------------------------

    def take(self, n: int) -> tuple[int, bytes]:
        """``(offset, key)``: the next ``n`` unused bytes of the encryption pool."""
        try:
            _check_range(0, n)
            if self._enc.level < n:
                raise KeyUnavailable(f"encryption pool holds {self._enc.level} bytes, {n} asked")
        except KeyStoreError as error:
            self._reject("take", error)
        end = self._enc.next + n
        if self._lease_hook is not None and (self._enc_mark is None or end > self._enc_mark):
            mark = end + self.config.lease
            self._lease_hook(mark, self._dec_mark)
            self._enc_mark = mark
        self._starved = False
        self._enc_consumed += n
        return self._enc.take(n)

    def get(self, offset: int, n: int) -> bytes:
        """The decryption key ``[offset, offset + n)``, at most once ever."""
        try:
            _check_range(offset, n)
            self._dec.check(offset, n)
        except KeyStoreError as error:
            self._reject("get", error)
        end = offset + n
        if self._lease_hook is not None and (self._dec_mark is None or end > self._dec_mark):
            mark = max(end, self._dec.highest) + self.config.lease
            self._lease_hook(self._enc_mark, mark)
            self._dec_mark = mark
        self._dec_consumed += n
        return self._dec.get(offset, n)

    def peek(self, offset: int, n: int) -> bytes:
        """The decryption key ``[offset, offset + n)`` without using it up.

        For verifying a frame's one-time MAC before acting on it: a forged frame must not
        burn key. The key is consumed only by a later :meth:`get` of the same range, once
        the tag has verified; peeked bytes must never encrypt or authenticate anything.
        """
        try:
            _check_range(offset, n)
            self._dec.check(offset, n)
        except KeyStoreError as error:
            self._reject("peek", error)
        start = offset - self._dec.base
        return bytes(self._dec.buf[start:start + n])

    def _reject(self, op: str, error: KeyStoreError) -> None:
        name = {KeyUnavailable: "unavailable", KeyAlreadyUsed: "already_used"}.get(
            type(error), "out_of_range")
        self._rejected[f"{op}.{name}"] += 1
        if op == "take" and isinstance(error, KeyUnavailable):
            self._starved = True
        raise error

    # -- synchronisation ---------------------------------------------------------------

    def skip_enc_to(self, offset: int) -> None:
        """Never use encryption key below ``offset`` (the peer's ``discarded`` from a SYNC)."""
        self._enc.skip_to(offset)

    def retire_dec_below(self, offset: int) -> None:
        """Give up decryption key below ``offset`` (crash recovery, or the peer's SYNC)."""
        self._dec.retire(offset)

    @property
    def discard_below(self) -> int:
        """Decryption key below this offset is gone (used and compacted, or discarded)."""
        return self._dec.floor

    def positions(self) -> KeyStorePositions:
        enc, dec = self._enc, self._dec
        return KeyStorePositions(self.position, enc.next, enc.end, dec.highest, dec.end,
                                 dec.floor)

    def status(self, now: float | None = None) -> KeyStoreStatus:
        totals = (self._ingested, self._enc_consumed, self._dec_consumed)
        rates = [meter.value if now is None else meter.sample(8 * total, now)
                 for meter, total in zip(self._rates, totals)]
        enc_disc, dec_disc = 8 * self._enc.discarded, 8 * self._dec.discarded
        return KeyStoreStatus(
            8 * self._enc.level, 8 * self._dec.level, 8 * self.config.capacity, self._starved,
            *rates, 8 * self._ingested, enc_disc + dec_disc, enc_disc, dec_disc,
            8 * self._skipped, 8 * self._enc_consumed, 8 * self._dec_consumed,
            dict(self._rejected))

    # -- persistence -------------------------------------------------------------------

    def set_lease_hook(self, hook: LeaseHook | None) -> None:
        """``hook(enc_mark, dec_mark)`` must make the marks durable before it returns."""
        self._lease_hook = hook

    def leases_reset(self) -> None:
        """A snapshot is durable: the next take/get must lease a new mark first."""
        self._enc_mark = self._dec_mark = None

    def snapshot(self) -> KeyStoreState:
        enc, dec = self._enc, self._dec
        return KeyStoreState(
            self.config, self.position, enc.next, enc.end,
            bytes(enc.buf[max(0, enc.next - enc.base):]), dec.floor, dec.end, dec.highest,
            bytes(dec.buf[max(0, dec.floor - dec.base):]), tuple(zip(dec.starts, dec.ends)),
            (self._ingested, self._skipped, enc.discarded, dec.discarded,
             self._enc_consumed, self._dec_consumed))

    @classmethod
    def from_state(cls, state: KeyStoreState) -> LinkKeyStore:
        store = cls(state.config)
        store.position = state.position
        enc, dec = store._enc, store._dec
        enc.next, enc.end = state.enc_next, state.enc_end
        enc.buf, enc.base = bytearray(state.enc_key), state.enc_end - len(state.enc_key)
        dec.floor, dec.end, dec.highest = state.dec_floor, state.dec_end, state.dec_highest
        dec.buf, dec.base = bytearray(state.dec_key), state.dec_end - len(state.dec_key)
        dec.starts = [lo for lo, _ in state.dec_used]
        dec.ends = [hi for _, hi in state.dec_used]
        dec.used = sum(hi - lo for lo, hi in state.dec_used)
        (store._ingested, store._skipped, enc.discarded, dec.discarded,
         store._enc_consumed, store._dec_consumed) = state.counters
        return store


def _check_range(offset: int, n: int) -> None:
    if type(n) is not int or n <= 0:  # noqa: E721 - bool is not a length
        raise KeyOutOfRange(f"key length must be a positive int, got {n!r}")
    if type(offset) is not int or offset < 0 or offset + n > MAX_OFFSET:  # noqa: E721
        raise KeyOutOfRange(f"range {offset!r}+{n} outside the 64-bit offset space")


def otp_xor(data: bytes, pad: bytes) -> bytes:
    """One-time-pad ``data`` with ``pad`` (same length): ``data XOR pad``."""
    size = len(data)
    if len(pad) != size:
        raise ValueError(f"pad of {len(pad)} bytes for {size} bytes of data")
    if size < 64:
        mixed = int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")
        return mixed.to_bytes(size, "little")
    return np.bitwise_xor(np.frombuffer(data, dtype=np.uint8),
                          np.frombuffer(pad, dtype=np.uint8)).tobytes()
