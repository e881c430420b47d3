"""Hypothesis strategies for the QKDNL layer: packets, ICMP messages, their bytes, mutations.

Imported by the codec tests and reusable by dissection tests and benchmarks.
"""

from __future__ import annotations

from hypothesis import strategies as st

from qbb.netlayer.icmp import (
    DestinationUnreachable, EchoReply, EchoRequest, ParameterProblem, ParameterProblemCode,
    SourceQuench, TimeExceeded, TimeExceededCode, UnreachableCode, encode_icmp,
    quote_original,
)
from qbb.netlayer.packet import QKDNLPacket, encode_packet
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL, PROTO_QROKR

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)

addresses = st.integers(0, 0xFFFFFFFF).map(lambda n: ".".join(str(n >> s & 0xFF)
                                                             for s in (24, 16, 8, 0)))
protocols = st.one_of(st.sampled_from([PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL, PROTO_QROKR]), u8)
options = st.integers(0, 10).flatmap(lambda words: st.binary(min_size=4 * words,
                                                             max_size=4 * words))

# Well-formed IPv4 option lists (NOP, Router Alert, End of List padding) for scapy checks.
_OPTION_ITEMS = st.sampled_from([b"\x01", b"\x94\x04\x00\x00", b"\x01\x01"])
scapy_options = st.lists(_OPTION_ITEMS, max_size=8).map(b"".join).map(
    lambda raw: (raw + b"\x00" * (-len(raw) % 4))[:40] if raw else b"")


def qkdnl_packets(payloads=st.binary(max_size=64), opts=options, protos=protocols):
    """Valid :class:`QKDNLPacket` objects."""
    return st.builds(
        QKDNLPacket, source=addresses, destination=addresses, protocol=protos,
        payload=payloads, ttl=u8, tos=u8, identification=u16, dont_fragment=st.booleans(),
        more_fragments=st.booleans(), fragment_offset=st.integers(0, 0x1FFF), options=opts)


def qkdnl_bytes(payloads=st.binary(max_size=64)):
    """Valid encoded QKDNL packets."""
    return qkdnl_packets(payloads).map(encode_packet)


originals = st.binary(max_size=72)
# What a QBB node really quotes: a packet's header and the first 8 bytes of its payload.
quoted_originals = qkdnl_bytes().map(quote_original)



def icmp_messages_with(originals=originals):
    """Valid ICMP message objects of every type; error messages quote ``originals``."""
    return st.one_of(
        st.builds(EchoRequest, u16, u16, st.binary(max_size=48)),
        st.builds(EchoReply, u16, u16, st.binary(max_size=48)),
        st.builds(DestinationUnreachable, st.sampled_from(UnreachableCode), originals,
                  st.just(0)),
        st.builds(DestinationUnreachable, st.just(UnreachableCode.FRAGMENTATION_NEEDED),
                  originals, u16),
        st.builds(SourceQuench, originals),
        st.builds(TimeExceeded, st.sampled_from(TimeExceededCode), originals),
        st.builds(ParameterProblem, u8, originals, st.sampled_from(ParameterProblemCode)),
    )


icmp_messages = icmp_messages_with()

icmp_bytes = icmp_messages.map(encode_icmp)


@st.composite
def mutated(draw, valid):
    """A valid encoding with bit flips, a truncation or an extension applied."""
    data = bytearray(draw(valid))
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite"]))
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data))):]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    elif data:
        data[draw(st.integers(0, len(data) - 1))] = draw(u8)
    return bytes(data)
