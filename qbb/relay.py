"""Hop-by-hop session-key relay across trusted QBB nodes (seed 002 §2.1, §2.5, §3.2).

SECOQC's trusted-relay principle: the *ingress* node draws a fresh random session key and
sends it towards the *egress* node; on every QBB link the key travels one-time-pad
encrypted with that link's QKD key, and it is in clear only inside the (trusted) nodes
it passes.  Here the key rides in a QKDTL KEY segment (:mod:`qbb.transport.packet`,
protocol 253) inside a QKDNL packet; the forwarder marks protocol 253 for encryption, so
each hop's Q3P frame carries it with the E flag set and a fresh pad from that link's key
store.  The egress node's :class:`KeyRelay` hands the key to local delivery; the ingress
node returns the same key to its caller, so both end points hold identical keys.

Segment used (docs/node.md): source and destination port :data:`RELAY_PORT`,
``seq`` = id of the first key, flags KEY, payload = one or more
``KeyDelivery(key_id, key_bits, key)`` bodies back to back (:meth:`KeyRelay.send_keys`
packs a batch of consecutive ids into one segment, so the per-packet cost of every hop is
shared by the batch).  Key ids count up per relay service.  No acknowledgement or retransmission here: QKDTL
connections (reliable delivery, key-consumption synchronisation) are the transport
layer's job; a lost relay packet is a lost key, seen by the caller as a missing
delivery.  Keys never appear in ``repr`` or logs.

Fast path: a relay packet is encoded and decoded with :mod:`struct`
(:func:`encode_key_segment`, :func:`encode_keys_segment`, :func:`parse_key_segment`,
:func:`parse_keys_segment`) instead of the construct codec,
which cost about 0.2 ms per 8 KiB key each way (``qbb bench relay``, docs/benchmarks-relay.md).
The fast decoder accepts exactly what :func:`~qbb.transport.packet.decode_segment` +
:func:`~qbb.transport.packet.decode_key_deliveries` accept (anything it is not sure of goes
to the codec, which raises :class:`~qbb.errors.DecodeError`); tests/test_relay_fastpath.py
checks both directions against the codec.  It verifies the RFC 1071 checksum over the whole
segment in one vectorised pass (:func:`~qbb.codec.internet_checksum`; the sum including the
stored value is -0 exactly when the stored value is the computed one, a stored 0xFFFF
aside, tests/test_checksum_fast.py).

Randomness: session keys come from :func:`qbb.csprng.random_bytes` (AES-256-CTR after
NIST CTR_DRBG, seeded and periodically reseeded from ``os.urandom``), about ten times
faster than ``os.urandom`` for the 57 KB of seven 65,535-bit keys; ``KeyRelay(randbytes=)``
takes any other source.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from qbb.csprng import random_bytes
from qbb.errors import DecodeError, EncodeError
from qbb.netlayer.packet import QKDNLPacket
from qbb.q3p.packet import Q3P_HEADER_LEN, Q3P_TAG_LEN
from qbb.codec import internet_checksum
from qbb.transport.packet import (RESERVED_FLAGS, SegmentFlags,
                                  decode_key_deliveries, decode_segment)
from qbb.wire import PROTO_QKDTL

__all__ = ["KeyRelay", "RELAY_PORT", "RelayedKey", "draw_keys", "encode_key_segment",
           "encode_keys_segment", "keys_per_segment", "parse_key_segment", "parse_keys_segment",
           "random_key"]

RELAY_PORT = 7  # the key relay service's QKDTL port at every node
MAX_KEY_BITS = 0xFFFF
SEGMENT_OVERHEAD = 20 + 20  # QKDNL header + QKDTL header around a KEY payload
MAX_KEYS_PAYLOAD = 0xFFFF - SEGMENT_OVERHEAD  # the QKDNL total length caps the payload
_HEADER = struct.Struct("!HHIIHHHH")  # ports, seq, ack, flags, window, length, checksum
_BODY = struct.Struct("!IH")  # key id, key bits
_KEY, _SYN = int(SegmentFlags.KEY), int(SegmentFlags.SYN)


def encode_key_segment(port: int, key_id: int, bits: int, key: bytes) -> bytes:
    """The KEY segment ``encode_segment(Segment(port, port, key_id, flags=KEY, payload=
    encode_key_delivery(KeyDelivery(key_id, bits, key))))``, built with :mod:`struct`."""
    return encode_keys_segment(port, ((key_id, bits, key),))


def encode_keys_segment(port: int, keys) -> bytes:
    """The KEY segment with ``seq`` = the first key id and payload
    ``encode_key_deliveries([KeyDelivery(id, bits, key) for id, bits, key in keys])``;
    the caller guarantees valid bodies (the relay draws them itself)."""
    parts = [_HEADER.pack(port, port, keys[0][0], 0, _KEY, 0, 0, 0)]
    for key_id, bits, key in keys:
        parts.append(_BODY.pack(key_id, bits))
        parts.append(key)
    raw = bytearray().join(parts)
    struct.pack_into("!H", raw, 16, len(raw) - 20)
    struct.pack_into("!H", raw, 18, internet_checksum(raw))
    return bytes(raw)


def _fast_bodies(data: bytes) -> list[tuple[int, int, bytes]] | None:
    """The bodies after a KEY header, or None if any is not plainly well formed."""
    n, offset, bodies = len(data), 20, []
    while offset < n:
        if n - offset < 6:
            return None
        key_id, bits = _BODY.unpack_from(data, offset)
        end = offset + 6 + (bits + 7) // 8
        if not bits or end > n or data[end - 1] & ((1 << (-bits % 8)) - 1):
            return None
        bodies.append((key_id, bits, bytes(data[offset + 6:end])))
        offset = end
    return bodies or None


def parse_keys_segment(data: bytes) -> tuple[int, list[tuple[int, int, bytes]]] | None:
    """``(dst_port, [(key_id, key_bits, key), ...])`` of a well-formed KEY segment,
    ``None`` for a well-formed segment of another kind; DecodeError for anything malformed."""
    n = len(data)
    if n >= 26:
        _, dst, _, _, flags, _, length, stored = _HEADER.unpack_from(data)
        # the sum over the whole segment, stored checksum included, is -0 exactly when the
        # stored value equals the computed one, except a stored 0xFFFF (never computed)
        if (length == n - 20 and flags & _KEY and not flags & (_SYN | RESERVED_FLAGS)
                and stored != 0xFFFF and internet_checksum(data) == 0):
            bodies = _fast_bodies(data)
            if bodies is not None:
                return dst, bodies
    segment = decode_segment(data)  # the slow path names the problem (DecodeError)
    if not segment.flags & SegmentFlags.KEY:
        return None
    keys = decode_key_deliveries(segment.payload)
    return segment.dst_port, [(k.key_id, k.key_bits, k.key) for k in keys]


def parse_key_segment(data: bytes) -> tuple[int, int, int, bytes] | None:
    """``(dst_port, key_id, key_bits, key)`` of a well-formed single-key KEY segment,
    ``None`` for a well-formed segment of another kind; DecodeError for anything malformed
    (a segment of several keys included: use :func:`parse_keys_segment`)."""
    parsed = parse_keys_segment(data)
    if parsed is None:
        return None
    dst, bodies = parsed
    if len(bodies) != 1:
        raise DecodeError("QKDTL", "payload", 20, f"{len(bodies)} key deliveries, expected one")
    return (dst, *bodies[0])


def keys_per_segment(bits: int, mtu: int) -> int:
    """How many ``bits``-bit keys fill one Q3P frame of ``mtu`` bytes (at least 1)."""
    room = min(mtu - Q3P_HEADER_LEN - Q3P_TAG_LEN - SEGMENT_OVERHEAD, MAX_KEYS_PAYLOAD)
    return max(1, room // (6 + (bits + 7) // 8))


@dataclass(frozen=True)
class RelayedKey:
    """A session key shared by ``source`` (ingress) and ``destination`` (egress)."""

    source: str
    destination: str
    key_id: int
    bits: int
    key: bytes = field(repr=False)


def random_key(bits: int, randbytes: Callable[[int], bytes] = random_bytes) -> bytes:
    """``bits`` random bits, MSB first, unused low bits of the last byte zero."""
    raw = bytearray(randbytes((bits + 7) // 8))
    raw[-1] &= 0xFF ^ ((1 << (-bits % 8)) - 1)
    return bytes(raw)


def draw_keys(bits: int, count: int,
              randbytes: Callable[[int], bytes] = random_bytes) -> list[bytes]:
    """``count`` keys as :func:`random_key` makes them, from one call of ``randbytes``."""
    nbytes, spare = (bits + 7) // 8, -bits % 8
    pool = randbytes(count * nbytes)
    if spare:
        pool = bytearray(pool)
        for end in range(nbytes - 1, count * nbytes, nbytes):
            pool[end] &= 0xFF ^ ((1 << spare) - 1)
    view = memoryview(pool)
    return [bytes(view[start:start + nbytes]) for start in range(0, count * nbytes, nbytes)]


class KeyRelay:
    """The key relay service of one node; ``node`` needs ``address``, ``register`` and
    ``send_packet`` (a :class:`qbb.node.QBBNode`)."""

    def __init__(self, node, *, port: int = RELAY_PORT,
                 on_key: Callable[[RelayedKey], None] | None = None,
                 first_key_id: int = 0,
                 randbytes: Callable[[int], bytes] = random_bytes) -> None:
        self.node, self.port, self.on_key = node, port, on_key
        self.randbytes = randbytes
        self.received: list[RelayedKey] = []
        self.counters: Counter[str] = Counter()
        self._next_id = first_key_id & 0xFFFFFFFF
        node.register(PROTO_QKDTL, self._on_packet)

    def send_key(self, destination: str, bits: int = 256) -> RelayedKey | None:
        """Draw a key and send it to ``destination``; the key, or None if not sent."""
        keys = self.send_keys(destination, bits, 1)
        return keys[0] if keys else None

    def send_keys(self, destination: str, bits: int = 256,
                  count: int = 1) -> list[RelayedKey] | None:
        """Draw ``count`` keys of consecutive ids and send them in one KEY segment;
        the keys, or None if not sent (their ids are then used up)."""
        if not isinstance(bits, int) or not 1 <= bits <= MAX_KEY_BITS:
            raise ValueError(f"key length must be 1..{MAX_KEY_BITS} bits, got {bits!r}")
        nbytes = (bits + 7) // 8
        if not isinstance(count, int) or not 1 <= count <= MAX_KEYS_PAYLOAD // (6 + nbytes):
            raise ValueError(f"{count!r} keys of {bits} bits do not fit one KEY segment")
        keys = []
        for key in draw_keys(bits, count, self.randbytes):
            key_id, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
            keys.append(RelayedKey(self.node.address, destination, key_id, bits, key))
        payload = encode_keys_segment(self.port, [(k.key_id, bits, k.key) for k in keys])
        if not self.node.send_packet(QKDNLPacket(self.node.address, destination,
                                                 PROTO_QKDTL, payload)):
            self.counters["send_failed"] += 1
            return None
        self.counters["sent"] += count
        self.counters["segments_sent"] += 1
        return keys

    @property
    def next_key_id(self) -> int:
        return self._next_id

    def _on_packet(self, packet: QKDNLPacket, interface: str | None) -> None:
        try:
            parsed = parse_keys_segment(packet.payload)
        except (DecodeError, EncodeError):
            self.counters["malformed"] += 1
            return
        if parsed is None or parsed[0] != self.port:
            self.counters["not_for_relay"] += 1
            return
        for body in parsed[1]:
            key = RelayedKey(packet.source, packet.destination, *body)
            self.received.append(key)
            self.counters["received"] += 1
            if self.on_key is not None:
                self.on_key(key)
