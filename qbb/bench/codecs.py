"""``qbb bench codecs``: per-message encode and decode time of every codec.

For the hot-path codecs (Q3P frames, QKDNL packets, OSPF Hello and LS Update) both
implementations are timed in the same run: the construct ``Struct`` that is the
specification and the ``struct`` fast path that the tests prove identical; the ratio
between them is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from qbb import samples
from qbb.bench import Result, time_per_call
from qbb.netlayer import icmp
from qbb.netlayer import packet as qkdnl
from qbb.q3p import packet as q3p
from qbb.routing import packet as ospf
from qbb.routing.rokr_packet import decode_rokr, encode_rokr
from qbb.transport.packet import decode_segment, encode_segment
from qbb.wire import PROTO_ICMP, PROTO_OSPF, PROTO_QKDTL, PROTO_QROKR

BENCH = "codecs"
#: OSPF packets whose construct specification is also timed (the fast path's ratio)
OSPF_SPEEDUP = ("ospf-hello", "ospf-lsu")

#: protocol -> (decode, encode) of the message a QKDNL packet carries
INNER = {
    PROTO_OSPF: (ospf.decode_packet, ospf.encode_packet),
    PROTO_ICMP: (icmp.decode_icmp, icmp.encode_icmp),
    PROTO_QKDTL: (decode_segment, encode_segment),
    PROTO_QROKR: (decode_rokr, encode_rokr),
}


def _cases() -> Iterator[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any], Any]]:
    """(case, encode, decode, message) for every sample message and the hot paths."""
    for name, pkt in samples.network_samples().items():
        decode, encode = INNER[pkt.protocol]
        yield name, encode, decode, decode(pkt.payload)
    hello = samples.network_samples()["ospf-hello"]
    yield "qkdnl-header", qkdnl.encode_packet, qkdnl.decode_packet, hello
    yield "qkdnl-header[construct]", qkdnl.encode_packet_spec, qkdnl.decode_packet_spec, hello
    for name in OSPF_SPEEDUP:
        yield (f"{name}[construct]", ospf.encode_packet_spec, ospf.decode_packet_spec,
               samples.ospf_samples()[name])
    for size in (1444, 65_000):
        frame = q3p.Q3PFrame(1, q3p.Command.DATA, bytes(size), bytes(16), encrypted=True,
                             e_offset=1 << 40, a_offset=1 << 41)
        yield f"q3p-frame-{size}B", q3p.encode_frame, q3p.decode_frame, frame
        yield (f"q3p-frame-{size}B[construct]", q3p.encode_frame_spec,
               q3p.decode_frame_spec, frame)


def run(quick: bool) -> Iterator[Result]:
    """Encode and decode time per message for every codec (µs)."""
    budget = 0.05 if quick else 0.3
    timings: dict[str, float] = {}
    for case, encode, decode, message in _cases():
        data = encode(message)
        assert decode(data) == message, case  # the bench measures real round trips
        for op, func in (("encode", lambda: encode(message)), ("decode", lambda: decode(data))):
            seconds = time_per_call(func, budget)
            timings[f"{case}/{op}"] = seconds
            yield Result(BENCH, case, f"{op}_us", seconds * 1e6, "us/msg",
                         {"bytes": len(data), "msgs_per_s": round(1 / seconds)})
    for base in ("qkdnl-header", "q3p-frame-1444B", "q3p-frame-65000B", *OSPF_SPEEDUP):
        for op in ("encode", "decode"):
            ratio = timings[f"{base}[construct]/{op}"] / timings[f"{base}/{op}"]
            yield Result(BENCH, base, f"{op}_speedup", ratio, "x",
                         {"baseline": "construct Struct (the specification)"})
