"""Reassembly of QKDNL fragments addressed to a node (RFC 791 §3.2, RFC 815, RFC 5722).

The QKDNL header is the IPv4 header (seed 002 §3.2, Appendix D), so it carries RFC 791's
fragmentation fields: Identification, More Fragments (MF) and Fragment Offset (8-byte
units).  A qbb node never fragments what it sends or forwards -- Q3P cuts every message
into link-MTU frames itself (:mod:`qbb.q3p.fragment`, messages up to 16 MiB), so a QKDNL
packet of at most 65535 bytes always fits a link (docs/node.md) -- but a destination must
accept fragments from any sender (RFC 1122 3.3.2), and :class:`Reassembler` does that.

Theory of operation.  Fragments are grouped by the key ``(source, destination, protocol,
identification)``.  Each group keeps the received pieces and a *hole list* (RFC 815): the
byte ranges still missing, initially ``[0, infinity)``.  A fragment covering ``[first,
end)`` must lie inside one hole; that hole is replaced by what is left of it on either
side (nothing on the right once the last fragment, MF = 0, fixes the datagram's length).
When no hole is left the pieces are joined under the header of the first fragment
(offset 0) with MF = 0 and offset 0, and the group is forgotten.

Faults, each dropped and counted in ``drops`` (prefixed ``reassembly_``):

* ``overlap`` -- a fragment overlapping data already received that is not an exact
  duplicate: in the spirit of RFC 5722 the whole datagram is abandoned, and fragments of
  it still to come are discarded (``poisoned``) until its timer runs out; an exact
  duplicate (same offset, same bytes, same MF) is dropped alone (``duplicate``);
* ``bad_length`` -- a fragment with MF = 1 whose data is empty or not a multiple of 8;
* ``inconsistent`` -- a second, different end of the datagram, or data beyond its end
  (abandons the datagram like an overlap);
* ``too_big`` -- a datagram that would exceed 65535 bytes (abandoned likewise);
* ``timeout`` -- not complete ``timeout`` seconds (default 15) after its first fragment;
  :meth:`Reassembler.handle_timer` returns the expired groups whose first fragment had
  arrived, so the forwarder can send ICMP Time Exceeded, code 1 (RFC 792, RFC 1122 3.2.2);
* ``evicted`` / ``memory`` -- memory bounds: at most ``max_datagrams`` groups and
  ``max_bytes`` buffered payload; a fragment that would exceed them evicts the oldest
  groups first; one that cannot fit even then is dropped.

Sans-IO: ``now`` is an argument; nothing here reads a clock.  :func:`fragment_packet`
splits a packet as RFC 791 describes, for tests and tools.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace

from qbb.errors import ConfigError
from qbb.netlayer.packet import (MAX_TOTAL_LENGTH, MIN_HEADER_LENGTH, QKDNLHeader, QKDNLPacket,
                                 encode_packet)

__all__ = ["Expired", "FragmentKey", "ReassemblyConfig", "Reassembler", "fragment_packet"]

FragmentKey = tuple[str, str, int, int]  # (source, destination, protocol, identification)
_INF = math.inf
_ORIGINAL_BYTES = 8  # of payload quoted by an ICMP error (RFC 792)


@dataclass(frozen=True)
class ReassemblyConfig:
    """Timeout (s) and memory bounds of a :class:`Reassembler`."""

    timeout: float = 15.0
    max_datagrams: int = 64
    max_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.timeout > 0 or self.max_datagrams < 1 or self.max_bytes < 1:
            raise ConfigError("reassembly: timeout > 0, max_datagrams >= 1, max_bytes >= 1")


@dataclass(frozen=True)
class Expired:
    """A group that timed out after its first fragment arrived: what an ICMP error needs."""

    header: QKDNLHeader
    quote: bytes = field(repr=False)  # header + first 8 payload bytes of the first fragment


@dataclass(eq=False)
class _Group:
    deadline: float
    holes: list[tuple[int, float]] = field(default_factory=lambda: [(0, _INF)])
    pieces: dict[int, bytes] = field(default_factory=dict)
    ends: dict[int, bool] = field(default_factory=dict)  # piece start -> MF
    end: int | None = None
    first: QKDNLHeader | None = None
    quote: bytes = b""
    size: int = 0
    poisoned: bool = False


class Reassembler:
    """Reassembles fragments into packets (see the module docstring)."""

    def __init__(self, config: ReassemblyConfig = ReassemblyConfig(),
                 drops: Counter[str] | None = None) -> None:
        self.config = config
        self.drops: Counter[str] = Counter() if drops is None else drops
        self.counters: Counter[str] = Counter()
        self._groups: OrderedDict[FragmentKey, _Group] = OrderedDict()
        self.buffered_bytes = 0

    @property
    def pending(self) -> int:
        """Groups held (incomplete, or abandoned and waiting out their timer)."""
        return len(self._groups)

    # -- input -------------------------------------------------------------------------

    def add(self, header: QKDNLHeader, payload: bytes, now: float) -> QKDNLPacket | None:
        """One fragment; the whole packet once its last missing piece arrived, else None."""
        self.handle_timer(now)
        self.counters["fragments"] += 1
        start = 8 * header.fragment_offset
        stop = start + len(payload)
        if header.more_fragments and (not payload or len(payload) % 8):
            return self._drop("bad_length")
        key = (header.source, header.destination, header.protocol, header.identification)
        group = self._groups.get(key)
        if group is not None and group.poisoned:
            return self._drop("poisoned")
        if stop > MAX_TOTAL_LENGTH - MIN_HEADER_LENGTH:
            return self._abandon(key, group, "too_big", now)
        if group is None:
            if not self._make_room(len(payload)):
                return self._drop("memory")
            group = self._groups[key] = _Group(now + self.config.timeout)
        return self._place(key, group, header, bytes(payload), start, stop, now)

    def _place(self, key: FragmentKey, group: _Group, header: QKDNLHeader, payload: bytes,
               start: int, stop: int, now: float) -> QKDNLPacket | None:
        last = not header.more_fragments
        if self._duplicate(group, payload, start, last):
            return self._drop("duplicate")
        if (group.end is not None and (stop > group.end or (last and stop != group.end))) \
                or (last and group.pieces and max(s + len(p) for s, p in group.pieces.items())
                    > stop):
            return self._abandon(key, group, "inconsistent", now)
        index = next((i for i, (lo, hi) in enumerate(group.holes)
                      if lo <= start and stop <= hi), None)
        if index is None:
            return self._abandon(key, group, "overlap", now)
        if len(payload) > self.config.max_bytes - self.buffered_bytes \
                and not self._make_room(len(payload), keep=key):
            return self._abandon(key, group, "memory", now)
        self._fill(group, index, start, stop, last)
        self._store(group, header, payload, start, last)
        if group.holes:
            return None
        return self._complete(key, group)

    def _duplicate(self, group: _Group, payload: bytes, start: int, last: bool) -> bool:
        if last and not payload and group.end == start:
            return True  # an empty last fragment marking the end already known
        return group.pieces.get(start) == payload and group.ends.get(start) == (not last)

    def _fill(self, group: _Group, index: int, start: int, stop: int, last: bool) -> None:
        """RFC 815 steps 1-8: replace the hole by its uncovered parts."""
        lo, hi = group.holes.pop(index)
        rest = []
        if lo < start:
            rest.append((lo, start))
        if last:
            group.end = stop
        elif stop < hi:
            rest.append((stop, hi))
        group.holes[index:index] = rest

    def _store(self, group: _Group, header: QKDNLHeader, payload: bytes, start: int,
               last: bool) -> None:
        group.pieces[start] = payload
        group.ends[start] = not last
        group.size += len(payload)
        self.buffered_bytes += len(payload)
        if start == 0:
            group.first = header
            group.quote = _quote(header, payload)

    def _complete(self, key: FragmentKey, group: _Group) -> QKDNLPacket | None:
        self._forget(key)
        first = group.first
        if first.header_length + group.end > MAX_TOTAL_LENGTH:
            return self._drop("too_big")
        self.counters["reassembled"] += 1
        payload = b"".join(group.pieces[s] for s in sorted(group.pieces))
        return QKDNLPacket(first.source, first.destination, first.protocol, payload,
                           first.ttl, first.tos, first.identification, first.dont_fragment,
                           False, 0, first.options)

    # -- timers ------------------------------------------------------------------------

    def handle_timer(self, now: float) -> list[Expired]:
        """Forget groups past their deadline; those with a first fragment are returned."""
        expired = []
        while self._groups:
            key, group = next(iter(self._groups.items()))
            if group.deadline > now:
                break
            self._forget(key)
            if not group.poisoned:
                self.drops["reassembly_timeout"] += 1
                if group.first is not None:
                    expired.append(Expired(group.first, group.quote))
        return expired

    def next_timer(self) -> float | None:
        """The earliest deadline (groups are kept in arrival order, so the first one)."""
        return next(iter(self._groups.values())).deadline if self._groups else None

    # -- bookkeeping -------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.drops[f"reassembly_{reason}"] += 1
        return None

    def _abandon(self, key: FragmentKey, group: _Group | None, reason: str,
                 now: float) -> None:
        """Drop the datagram and discard its later fragments until its timer ends."""
        if group is None:
            if not self._make_room(0):
                return self._drop(reason)
            group = self._groups[key] = _Group(now + self.config.timeout)
        self.buffered_bytes -= group.size
        group.pieces, group.ends, group.size, group.poisoned = {}, {}, 0, True
        return self._drop(reason)

    def _forget(self, key: FragmentKey) -> None:
        group = self._groups.pop(key)
        self.buffered_bytes -= group.size

    def _make_room(self, size: int, keep: FragmentKey | None = None) -> bool:
        """Evict the oldest groups (never ``keep``) until ``size`` more bytes and, for a
        new group, one more group fit; False if that is impossible."""
        new = 0 if keep is not None else 1
        if size > self.config.max_bytes:
            return False
        while (len(self._groups) + new > self.config.max_datagrams
               or self.buffered_bytes + size > self.config.max_bytes):
            victim = next((k for k in self._groups if k != keep), None)
            if victim is None:
                return False
            self._forget(victim)
            self.drops["reassembly_evicted"] += 1
        return True


def _quote(header: QKDNLHeader, payload: bytes) -> bytes:
    """The first fragment's header and first 8 payload bytes, as sent (RFC 792)."""
    packet = QKDNLPacket(header.source, header.destination, header.protocol,
                         payload[:_ORIGINAL_BYTES], header.ttl, header.tos,
                         header.identification, header.dont_fragment, header.more_fragments,
                         header.fragment_offset, header.options)
    return encode_packet(packet)


def fragment_packet(packet: QKDNLPacket, max_payload: int) -> list[QKDNLPacket]:
    """Split ``packet`` into fragments of at most ``max_payload`` data bytes (RFC 791).

    ``max_payload`` is rounded down to a multiple of 8 (at least 8); the fragments keep
    the packet's fields, offsets in 8-byte units and MF on all but the last.  A packet
    that already is a fragment is split further (its offset and MF carried on)."""
    if packet.dont_fragment:
        raise ConfigError("fragment_packet: the packet has Don't Fragment set")
    size = max(8, max_payload - max_payload % 8)
    data = packet.payload
    if len(data) <= size:
        return [packet]
    pieces = []
    for start in range(0, len(data), size):
        chunk = data[start:start + size]
        more = start + size < len(data) or packet.more_fragments
        pieces.append(replace(packet, payload=chunk, more_fragments=more,
                              fragment_offset=packet.fragment_offset + start // 8))
    return pieces
