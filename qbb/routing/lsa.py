"""OSPFv2 link-state advertisements (RFC 2328 A.4), the LSAs of SECOQC routing (§2.5.1).

Every LSA starts with the 20-byte LSA header (A.4.1)::

    0  LS age (16)          2  Options (8)   3  LS type (8)
    4  Link State ID        8  Advertising Router
    12 LS sequence number (signed 32)
    16 LS checksum (Fletcher, 12.1.7)         18 length (bytes, header included)

Bodies decoded here: Router-LSA (type 1, A.4.2) and Summary-LSAs (types 3 and 4,
A.4.4).  Any other type (2 Network, 5 AS-external, opaque ...) decodes to
:class:`UnknownLSA`, whose body is kept as opaque bytes, so a node can still store,
flood and acknowledge it.  Byte layouts: docs/wire/ospf.md.

Encoders fill the length and the checksum; decoders verify both and reject reserved
octets or bits that are not zero, so ``encode_lsa(decode_lsa(b)) == b`` whenever the
decode succeeds.  LS sequence numbers are signed (``INITIAL_SEQUENCE_NUMBER`` is
0x80000001 on the wire, i.e. ``-0x7FFFFFFF``).  :func:`compare_lsa` decides which of
two instances is more recent (RFC 2328 13.1) and :func:`lsa_key` names an LSA in the
link-state database.

The construct structures (:data:`HEADER`, :data:`ROUTER_BODY`, :data:`SUMMARY_BODY`) and
the ``*_spec`` functions are the specification.  The public codec functions first try the
``struct`` fast path of :mod:`qbb.routing.fastpath`, which returns the specification's
result or ``None`` when the input is not a plain valid message; on ``None`` they run the
``*_spec`` function, which gives the same value or raises the precise error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

import construct as c

from qbb.codec import IPv4Address, fail, require_bytes
from qbb.errors import DecodeError, EncodeError
from qbb.routing.checksum import LSA_HEADER_SIZE, lsa_checksum, verify_lsa_checksum
from qbb.routing.common import (
    LAYER, EnumField, FlagField, Options, OptionsField, build_as, frozen_tuple, parse_at)

__all__ = [
    "INITIAL_SEQUENCE_NUMBER", "LSA_HEADER_SIZE", "MAX_AGE", "MAX_AGE_DIFF",
    "MAX_SEQUENCE_NUMBER", "LinkType", "Lsa", "LsaHeader", "LsType", "RouterFlags",
    "RouterLSA", "RouterLink", "SummaryLSA", "TosMetric", "UnknownLSA", "as_ls_type",
    "compare_lsa", "decode_lsa", "decode_lsa_at", "decode_lsa_at_spec", "decode_lsa_header",
    "decode_lsa_header_at", "decode_lsa_header_at_spec", "decode_lsa_header_spec",
    "decode_lsa_spec", "encode_lsa", "encode_lsa_header", "encode_lsa_header_spec",
    "encode_lsa_spec", "is_newer", "lsa_checksum", "lsa_header", "lsa_header_spec",
    "lsa_key", "verify_lsa_checksum"]

MAX_AGE = 3600  # seconds (RFC 2328 B)
MAX_AGE_DIFF = 900  # seconds
INITIAL_SEQUENCE_NUMBER = -0x7FFFFFFF  # 0x80000001
MAX_SEQUENCE_NUMBER = 0x7FFFFFFF
_MAX_LENGTH = 0xFFFF


class LsType(enum.IntEnum):
    """LS type (RFC 2328 A.4.1); other values stay plain ``int``."""

    ROUTER = 1
    NETWORK = 2
    SUMMARY_NETWORK = 3
    SUMMARY_ASBR = 4
    AS_EXTERNAL = 5


class LinkType(enum.IntEnum):
    """Type of a Router-LSA link (RFC 2328 A.4.2)."""

    POINT_TO_POINT = 1
    TRANSIT = 2
    STUB = 3
    VIRTUAL = 4


class RouterFlags(enum.IntFlag):
    """Router-LSA flags: B area border, E AS boundary, V virtual-link endpoint."""

    B = 0x01
    E = 0x02
    V = 0x04


def as_ls_type(value: int) -> int:
    """``value`` as an :class:`LsType` member when it is one, else the plain int."""
    return LsType(value) if value in LsType._value2member_map_ else value


@dataclass(frozen=True, kw_only=True)
class LsaHeader:
    """An LSA header as listed in DD and LS Ack packets (checksum, length as given)."""

    ls_type: int
    link_state_id: str
    advertising_router: str
    ls_sequence_number: int = INITIAL_SEQUENCE_NUMBER
    ls_age: int = 0
    options: Options = Options.E
    ls_checksum: int = 0
    length: int = LSA_HEADER_SIZE


@dataclass(frozen=True)
class TosMetric:
    """A TOS-specific metric (16 bits in Router-LSAs, 24 bits in Summary-LSAs)."""

    tos: int
    metric: int


@dataclass(frozen=True, kw_only=True)
class RouterLink:
    """One link of a Router-LSA; ``metric`` is the TOS 0 cost."""

    link_id: str
    link_data: str
    link_type: LinkType
    metric: int
    tos_metrics: tuple[TosMetric, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "tos_metrics")


@dataclass(frozen=True, kw_only=True)
class RouterLSA:
    """Type 1: the router's links into the area (RFC 2328 A.4.2)."""

    link_state_id: str
    advertising_router: str
    ls_sequence_number: int = INITIAL_SEQUENCE_NUMBER
    ls_age: int = 0
    options: Options = Options.E
    flags: RouterFlags = RouterFlags(0)
    links: tuple[RouterLink, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "links")

    @property
    def ls_type(self) -> LsType:
        return LsType.ROUTER


@dataclass(frozen=True, kw_only=True)
class SummaryLSA:
    """Types 3 (network) and 4 (AS boundary router): a cost from an area border."""

    ls_type: LsType
    link_state_id: str
    advertising_router: str
    metric: int
    network_mask: str = "0.0.0.0"
    ls_sequence_number: int = INITIAL_SEQUENCE_NUMBER
    ls_age: int = 0
    options: Options = Options.E
    tos_metrics: tuple[TosMetric, ...] = ()

    def __post_init__(self) -> None:
        frozen_tuple(self, "tos_metrics")


@dataclass(frozen=True, kw_only=True)
class UnknownLSA:
    """Any LS type other than 1, 3 and 4, its body kept undecoded."""

    ls_type: int
    link_state_id: str
    advertising_router: str
    ls_sequence_number: int = INITIAL_SEQUENCE_NUMBER
    ls_age: int = 0
    options: Options = Options.E
    body: bytes = b""


Lsa = Union[RouterLSA, SummaryLSA, UnknownLSA]
_SUMMARY_TYPES = (LsType.SUMMARY_NETWORK, LsType.SUMMARY_ASBR)
_KNOWN_BODIES = (LsType.ROUTER, *_SUMMARY_TYPES)

HEADER = c.Struct(
    "ls_age" / c.Int16ub,
    "options" / OptionsField,
    "ls_type" / c.Int8ub,
    "link_state_id" / IPv4Address,
    "advertising_router" / IPv4Address,
    "ls_sequence_number" / c.Int32sb,
    "ls_checksum" / c.Int16ub,
    "length" / c.ExprValidator(c.Int16ub, lambda length, _: length >= LSA_HEADER_SIZE),
)
_ROUTER_TOS = c.Struct("tos" / c.Int8ub, "reserved" / c.Const(b"\x00"), "metric" / c.Int16ub)
_ROUTER_LINK = c.Struct(
    "link_id" / IPv4Address,
    "link_data" / IPv4Address,
    "link_type" / EnumField(c.Int8ub, LinkType),
    "tos_count" / c.Rebuild(c.Int8ub, c.len_(c.this.tos_metrics)),
    "metric" / c.Int16ub,
    "tos_metrics" / c.Array(c.this.tos_count, _ROUTER_TOS),
)
ROUTER_BODY = c.Struct(
    "flags" / FlagField(c.Int8ub, RouterFlags),
    "reserved" / c.Const(b"\x00"),
    "link_count" / c.Rebuild(c.Int16ub, c.len_(c.this.links)),
    "links" / c.Array(c.this.link_count, _ROUTER_LINK),
)
SUMMARY_BODY = c.Struct(
    "network_mask" / IPv4Address,
    "reserved" / c.Const(b"\x00"),
    "metric" / c.Int24ub,
    "tos_metrics" / c.GreedyRange(c.Struct("tos" / c.Int8ub, "metric" / c.Int24ub)),
)


# -- LSA header ---------------------------------------------------------------------

def decode_lsa_header_spec(data: bytes) -> LsaHeader:
    """:func:`decode_lsa_header` through the construct specification."""
    require_bytes(data, LAYER)
    return decode_lsa_header_at_spec(data, 0, len(data), "lsa_header")


def encode_lsa_header_spec(header: LsaHeader, field: str = "lsa_header") -> bytes:
    """:func:`encode_lsa_header` through the construct specification."""
    return build_as(HEADER, vars(header), field)


def decode_lsa_header_at_spec(data: bytes, start: int, end: int, field: str) -> LsaHeader:
    """:func:`decode_lsa_header_at` through the construct specification."""
    value = parse_at(HEADER, data, start, end, field)
    return LsaHeader(
        ls_type=as_ls_type(value.ls_type), link_state_id=value.link_state_id,
        advertising_router=value.advertising_router,
        ls_sequence_number=value.ls_sequence_number, ls_age=value.ls_age,
        options=value.options, ls_checksum=value.ls_checksum, length=value.length)


# -- whole LSAs ---------------------------------------------------------------------

def decode_lsa_spec(data: bytes) -> Lsa:
    """:func:`decode_lsa` through the construct specification."""
    require_bytes(data, LAYER)
    lsa, end = decode_lsa_at_spec(data, 0, "lsa")
    if end != len(data):
        fail(LAYER, "lsa.length", 18, f"LSA length {end} but {len(data)} bytes given")
    return lsa


def decode_lsa_at_spec(data: bytes, start: int, field: str) -> tuple[Lsa, int]:
    """:func:`decode_lsa_at` through the construct specification."""
    header = decode_lsa_header_at_spec(data, start, start + LSA_HEADER_SIZE, field)
    end = start + header.length
    if end > len(data):
        fail(LAYER, f"{field}.length", start + 18,
             f"LSA length {header.length} exceeds the {len(data) - start} bytes left")
    if not verify_lsa_checksum(data[start:end]):
        fail(LAYER, f"{field}.ls_checksum", start + 16,
             f"Fletcher checksum 0x{header.ls_checksum:04x} does not verify "
             f"(expected 0x{lsa_checksum(data[start:end]):04x})")
    body_start = start + LSA_HEADER_SIZE
    if header.ls_type == LsType.ROUTER:
        return _decode_router(header, data, body_start, end, field), end
    if header.ls_type in _SUMMARY_TYPES:
        return _decode_summary(header, data, body_start, end, field), end
    unknown = UnknownLSA(ls_type=header.ls_type, body=bytes(data[body_start:end]),
                         **_common(header))
    return unknown, end


def _common(header: LsaHeader) -> dict:
    return {"link_state_id": header.link_state_id,
            "advertising_router": header.advertising_router,
            "ls_sequence_number": header.ls_sequence_number,
            "ls_age": header.ls_age, "options": header.options}


def _decode_router(header: LsaHeader, data: bytes, start: int, end: int,
                   field: str) -> RouterLSA:
    try:
        body = parse_at(ROUTER_BODY, data, start, end, f"{field}.router")
    except DecodeError as error:
        if not error.field.endswith("<end>"):
            raise
        fail(LAYER, f"{field}.router.link_count", start + 2,
             f"{end - error.offset} bytes after the announced links: {error.reason}")
    links = tuple(
        RouterLink(link_id=link.link_id, link_data=link.link_data,
                   link_type=link.link_type, metric=link.metric,
                   tos_metrics=tuple(TosMetric(t.tos, t.metric) for t in link.tos_metrics))
        for link in body.links)
    return RouterLSA(flags=body.flags, links=links, **_common(header))


def _decode_summary(header: LsaHeader, data: bytes, start: int, end: int,
                    field: str) -> SummaryLSA:
    if end - start > 8 and (end - start) % 4:
        fail(LAYER, f"{field}.summary.tos_metrics", start + 8,
             f"{end - start - 8} bytes of TOS entries is not a multiple of 4")
    body = parse_at(SUMMARY_BODY, data, start, end, f"{field}.summary")
    return SummaryLSA(
        ls_type=header.ls_type, network_mask=body.network_mask, metric=body.metric,
        tos_metrics=tuple(TosMetric(t.tos, t.metric) for t in body.tos_metrics),
        **_common(header))


def encode_lsa_spec(lsa: Lsa) -> bytes:
    """:func:`encode_lsa` through the construct specification."""
    body = _encode_body(lsa)
    length = LSA_HEADER_SIZE + len(body)
    if length > _MAX_LENGTH:
        raise _encode_error("lsa.length", f"LSA of {length} bytes exceeds 65535")
    header = LsaHeader(ls_type=lsa.ls_type, length=length, **_common(lsa))
    raw = encode_lsa_header_spec(header, "lsa") + body
    return raw[:16] + lsa_checksum(raw).to_bytes(2, "big") + raw[18:]


def _encode_body(lsa: Lsa) -> bytes:
    if isinstance(lsa, RouterLSA):
        links = [dict(vars(link), tos_metrics=[vars(t) for t in link.tos_metrics])
                 for link in lsa.links]
        return build_as(ROUTER_BODY, {"flags": lsa.flags, "links": links}, "lsa.router")
    if isinstance(lsa, SummaryLSA):
        if lsa.ls_type not in _SUMMARY_TYPES:
            raise _encode_error("lsa.ls_type", f"{lsa.ls_type!r} is not a summary type")
        value = {"network_mask": lsa.network_mask, "metric": lsa.metric,
                 "tos_metrics": [vars(t) for t in lsa.tos_metrics]}
        return build_as(SUMMARY_BODY, value, "lsa.summary")
    if isinstance(lsa, UnknownLSA):
        if lsa.ls_type in _KNOWN_BODIES:
            raise _encode_error("lsa.ls_type", f"type {lsa.ls_type} has a decoded form")
        return bytes(lsa.body)
    raise _encode_error("lsa", f"not an LSA: {type(lsa).__name__}")


def _encode_error(field: str, reason: str) -> EncodeError:
    return EncodeError(LAYER, field, reason)


# -- identity and ordering (RFC 2328 12.1, 13.1) ------------------------------------

def lsa_header_spec(lsa: Lsa | LsaHeader) -> LsaHeader:
    """:func:`lsa_header` through the construct specification."""
    if isinstance(lsa, LsaHeader):
        return lsa
    raw = encode_lsa_spec(lsa)
    return decode_lsa_header_at_spec(raw, 0, LSA_HEADER_SIZE, "lsa")


def lsa_key(lsa: Lsa | LsaHeader) -> tuple[int, str, str]:
    """``(LS type, Link State ID, Advertising Router)``: the LSA's database key."""
    return (int(lsa.ls_type), lsa.link_state_id, lsa.advertising_router)


def compare_lsa(a: Lsa | LsaHeader, b: Lsa | LsaHeader) -> int:
    """1 if ``a`` is the more recent instance, -1 if ``b`` is, 0 if they are the same.

    RFC 2328 13.1: higher sequence number, then higher checksum (unsigned), then an
    instance at MaxAge, then (ages differing by more than MaxAgeDiff) the younger one.
    Ages beyond MaxAge count as MaxAge.
    """
    ha, hb = lsa_header(a), lsa_header(b)
    for x, y in ((ha.ls_sequence_number, hb.ls_sequence_number),
                 (ha.ls_checksum, hb.ls_checksum)):
        if x != y:
            return 1 if x > y else -1
    age_a, age_b = min(ha.ls_age, MAX_AGE), min(hb.ls_age, MAX_AGE)
    if (age_a == MAX_AGE) != (age_b == MAX_AGE):
        return 1 if age_a == MAX_AGE else -1
    if abs(age_a - age_b) > MAX_AGE_DIFF:
        return 1 if age_a < age_b else -1
    return 0


def is_newer(a: Lsa | LsaHeader, b: Lsa | LsaHeader) -> bool:
    """True when ``a`` is a more recent instance than ``b`` (RFC 2328 13.1)."""
    return compare_lsa(a, b) > 0


# -- public codec functions: fast path first, the specification for everything else ------

def decode_lsa_header(data: bytes) -> LsaHeader:
    """Decode exactly one 20-byte LSA header."""
    header = _fastpath().try_decode_lsa_header(data)
    return decode_lsa_header_spec(data) if header is None else header


def encode_lsa_header(header: LsaHeader, field: str = "lsa_header") -> bytes:
    """Encode an LSA header; checksum and length are taken as given."""
    raw = _fastpath().try_encode_lsa_header(header)
    return encode_lsa_header_spec(header, field) if raw is None else raw


def decode_lsa_header_at(data: bytes, start: int, end: int, field: str) -> LsaHeader:
    """Decode the LSA header in ``data[start:end]`` (errors: ``field``, absolute offsets)."""
    header = _fastpath().try_decode_lsa_header_at(data, start, end)
    return decode_lsa_header_at_spec(data, start, end, field) if header is None else header


def decode_lsa(data: bytes) -> Lsa:
    """Decode one LSA occupying all of ``data``."""
    lsa = _fastpath().try_decode_lsa(data)
    return decode_lsa_spec(data) if lsa is None else lsa


def decode_lsa_at(data: bytes, start: int, field: str) -> tuple[Lsa, int]:
    """Decode the LSA at ``data[start:]``; returns it and the offset just after it.

    Errors name fields below ``field`` and give offsets into the whole ``data``.
    """
    found = _fastpath().try_decode_lsa_at(data, start)
    return decode_lsa_at_spec(data, start, field) if found is None else found


def encode_lsa(lsa: Lsa) -> bytes:
    """Encode an LSA, filling in its length and Fletcher checksum."""
    raw = _fastpath().try_encode_lsa(lsa)
    return encode_lsa_spec(lsa) if raw is None else raw


def lsa_header(lsa: Lsa | LsaHeader) -> LsaHeader:
    """The header of ``lsa`` as it appears on the wire (checksum and length filled)."""
    if isinstance(lsa, LsaHeader):
        return lsa
    header = _fastpath().try_lsa_header(lsa)
    return lsa_header_spec(lsa) if header is None else header


_FASTPATH = None


def _fastpath():
    """:mod:`qbb.routing.fastpath`, imported on first use (it imports this module)."""
    global _FASTPATH  # noqa: PLW0603 - a one-time lazy import
    if _FASTPATH is None:
        from qbb.routing import fastpath
        _FASTPATH = fastpath
    return _FASTPATH
