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
``seq`` = key id, flags KEY, payload = ``KeyDelivery(key_id, key_bits, key)``.  Key ids
count up per relay service.  No acknowledgement or retransmission here: QKDTL
connections (reliable delivery, key-consumption synchronisation) are the transport
layer's job; a lost relay packet is a lost key, seen by the caller as a missing
delivery.  Keys never appear in ``repr`` or logs.

Fast path: a relay packet is encoded and decoded with :mod:`struct`
(:func:`encode_key_segment`, :func:`parse_key_segment`) instead of the construct codec,
which cost about 0.2 ms per 8 KiB key each way (``qbb bench relay``, docs/benchmarks-relay.md).
The fast decoder accepts exactly what :func:`~qbb.transport.packet.decode_segment` +
:func:`~qbb.transport.packet.decode_key_delivery` accept (anything it is not sure of goes
to the codec, which raises :class:`~qbb.errors.DecodeError`); tests/test_relay_fastpath.py
checks both directions against the codec.
"""

from __future__ import annotations

import secrets
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from qbb.errors import DecodeError, EncodeError
from qbb.netlayer.packet import QKDNLPacket
from qbb.codec import internet_checksum
from qbb.transport.packet import (RESERVED_FLAGS, SegmentFlags, decode_key_delivery,
                                  decode_segment)
from qbb.wire import PROTO_QKDTL

__all__ = ["KeyRelay", "RELAY_PORT", "RelayedKey", "encode_key_segment", "parse_key_segment",
           "random_key"]

RELAY_PORT = 7  # the key relay service's QKDTL port at every node
MAX_KEY_BITS = 0xFFFF
_HEADER = struct.Struct("!HHIIHHHH")  # ports, seq, ack, flags, window, length, checksum
_BODY = struct.Struct("!IH")  # key id, key bits
_KEY, _SYN = int(SegmentFlags.KEY), int(SegmentFlags.SYN)


def encode_key_segment(port: int, key_id: int, bits: int, key: bytes) -> bytes:
    """The KEY segment ``encode_segment(Segment(port, port, key_id, flags=KEY, payload=
    encode_key_delivery(KeyDelivery(key_id, bits, key))))``, built with :mod:`struct`."""
    raw = bytearray(_HEADER.pack(port, port, key_id, 0, _KEY, 0, 6 + len(key), 0))
    raw += _BODY.pack(key_id, bits)
    raw += key
    raw[18:20] = internet_checksum(raw).to_bytes(2, "big")
    return bytes(raw)


def parse_key_segment(data: bytes) -> tuple[int, int, int, bytes] | None:
    """``(dst_port, key_id, key_bits, key)`` of a well-formed KEY segment, ``None`` for a
    well-formed segment of another kind; DecodeError for anything malformed."""
    n = len(data)
    if n >= 26:
        _, dst, _, _, flags, _, length, stored = _HEADER.unpack_from(data)
        key_id, bits = _BODY.unpack_from(data, 20)
        if (length == n - 20 and flags & _KEY and not flags & (_SYN | RESERVED_FLAGS)
                and 1 <= bits and n - 26 == (bits + 7) // 8
                and not data[-1] & ((1 << (-bits % 8)) - 1)
                and internet_checksum(b"".join((data[:18], b"\0\0", data[20:]))) == stored):
            return dst, key_id, bits, bytes(data[26:])
    segment = decode_segment(data)  # the slow path names the problem (DecodeError)
    if not segment.flags & SegmentFlags.KEY:
        return None
    body = decode_key_delivery(segment.payload)
    return segment.dst_port, body.key_id, body.key_bits, body.key


@dataclass(frozen=True)
class RelayedKey:
    """A session key shared by ``source`` (ingress) and ``destination`` (egress)."""

    source: str
    destination: str
    key_id: int
    bits: int
    key: bytes = field(repr=False)


def random_key(bits: int, randbytes: Callable[[int], bytes] = secrets.token_bytes) -> bytes:
    """``bits`` random bits, MSB first, unused low bits of the last byte zero."""
    raw = bytearray(randbytes((bits + 7) // 8))
    raw[-1] &= 0xFF ^ ((1 << (-bits % 8)) - 1)
    return bytes(raw)


class KeyRelay:
    """The key relay service of one node; ``node`` needs ``address``, ``register`` and
    ``send_packet`` (a :class:`qbb.node.QBBNode`)."""

    def __init__(self, node, *, port: int = RELAY_PORT,
                 on_key: Callable[[RelayedKey], None] | None = None,
                 first_key_id: int = 0) -> None:
        self.node, self.port, self.on_key = node, port, on_key
        self.received: list[RelayedKey] = []
        self.counters: Counter[str] = Counter()
        self._next_id = first_key_id & 0xFFFFFFFF
        node.register(PROTO_QKDTL, self._on_packet)

    def send_key(self, destination: str, bits: int = 256) -> RelayedKey | None:
        """Draw a key and send it to ``destination``; the key, or None if not sent."""
        if not isinstance(bits, int) or not 1 <= bits <= MAX_KEY_BITS:
            raise ValueError(f"key length must be 1..{MAX_KEY_BITS} bits, got {bits!r}")
        key_id, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        relayed = RelayedKey(self.node.address, destination, key_id, bits, random_key(bits))
        packet = QKDNLPacket(self.node.address, destination, PROTO_QKDTL,
                             encode_key_segment(self.port, key_id, bits, relayed.key))
        if not self.node.send_packet(packet):  # no route, link queue full, ...
            self.counters["send_failed"] += 1
            return None
        self.counters["sent"] += 1
        return relayed

    @property
    def next_key_id(self) -> int:
        return self._next_id

    def _on_packet(self, packet: QKDNLPacket, interface: str | None) -> None:
        try:
            parsed = parse_key_segment(packet.payload)
        except (DecodeError, EncodeError):
            self.counters["malformed"] += 1
            return
        if parsed is None or parsed[0] != self.port:
            self.counters["not_for_relay"] += 1
            return
        key = RelayedKey(packet.source, packet.destination, *parsed[1:])
        self.received.append(key)
        self.counters["received"] += 1
        if self.on_key is not None:
            self.on_key(key)
