"""A stdlib ``struct`` fast path for the OSPFv2 codecs (RFC 2328 A.3, A.4).

The construct ``Struct``\\ s in :mod:`qbb.routing.packet` and :mod:`qbb.routing.lsa` are the
specification (``*_spec`` functions there).  Every packet a router sends or receives goes
through the public codec functions, which try this module first.  Each ``try_*`` function
returns exactly what the specification returns, or ``None`` whenever its input is anything
but a plain valid message: bytes that do not decode, a value out of range, a type it does
not know (an ``int`` subclass such as ``bool`` or an ``IntEnum`` member is fine).  On
``None`` the public function runs the specification, which raises the precise
:class:`~qbb.errors.DecodeError` / :class:`~qbb.errors.EncodeError` (field, offset, reason).

So the fast path only has to be right about what it *accepts*; it never builds an error.
``tests/test_ospf_fastpath.py`` checks that it accepts every valid message and that
whatever it accepts, the specification produces identically (same bytes, same values of
the same types).  Layouts: the module docstrings of ``packet.py`` / ``lsa.py`` and
docs/wire/ospf.md.  Techniques: precompiled :class:`struct.Struct` objects, bounded caches
between dotted quads and their 4 bytes (``socket.inet_aton`` / ``inet_ntoa`` on a miss),
lookup tables for the enum and flag fields, the loop-free Fletcher sums of
:mod:`qbb.routing.checksum`, and per-class constructors that fill a frozen dataclass's
``__dict__`` directly (values already validated, as :func:`qbb.codec.frozen_new` does).

This module imports ``lsa`` and ``packet``; ``packet`` binds it at its end and ``lsa``
imports it on first use, so any of the three can be imported first.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from typing import Any, Callable

from qbb.codec import internet_checksum
from qbb.routing.checksum import check_octets, lsa_checksum_verifies
from qbb.routing.common import Options
from qbb.routing.lsa import (
    LinkType, LsaHeader, RouterFlags, RouterLink, RouterLSA, SummaryLSA, TosMetric,
    UnknownLSA, as_ls_type)
from qbb.routing.packet import (
    AuType, DatabaseDescription, DdFlags, Hello, LinkStateAck, LinkStateRequest,
    LinkStateUpdate, LsRequest, OspfPacket)

__all__ = [
    "try_decode_lsa", "try_decode_lsa_at", "try_decode_lsa_header",
    "try_decode_lsa_header_at", "try_decode_packet", "try_encode_lsa",
    "try_encode_lsa_header", "try_encode_packet", "try_lsa_header"]


class _Reject(Exception):
    """Not a plain valid message: let the specification decide."""


#: what a fast-path function may raise on odd input; all of them mean "ask the spec"
_REJECT = (_Reject, struct.error, ValueError, TypeError, KeyError, IndexError,
           AttributeError, OverflowError, OSError)

_LSA_HEADER = struct.Struct("!HBB4s4siHH")
_ROUTER_FIXED = struct.Struct("!BBH")
_ROUTER_LINK = struct.Struct("!4s4sBBH")
_ROUTER_TOS = struct.Struct("!BBH")
_SUMMARY_FIXED = struct.Struct("!4sI")
_SUMMARY_TOS = struct.Struct("!BHB")
_U32 = struct.Struct("!I")
_HEADER = struct.Struct("!BBH4s4sHH8s")
_HELLO = struct.Struct("!4sHBBI4s4s")
_DD_FIXED = struct.Struct("!HBBI")
_LS_REQUEST = struct.Struct("!I4s4s")

_OPTIONS = tuple(Options(i) for i in range(256))
_LS_TYPES = tuple(as_ls_type(i) for i in range(256))
_LINK_TYPES = {int(t): t for t in LinkType}
_LINK_TYPE_CODES = {int(t): int(t) for t in LinkType}
_ROUTER_FLAGS = tuple(RouterFlags(i) for i in range(8))
_DD_FLAGS = tuple(DdFlags(i) for i in range(8))
_AU_TYPES = (AuType.NULL, AuType.SIMPLE)
_AU_CODES = {0: 0, 1: 1}  # AuType 2 (cryptographic) is refused by the specification
_TYPE_CODES = {Hello: 1, DatabaseDescription: 2, LinkStateRequest: 3, LinkStateUpdate: 4,
               LinkStateAck: 5}
_SUMMARY_TYPES = (3, 4)
_KNOWN_BODIES = (1, 3, 4)


def _constructor(cls: type) -> Callable[..., Any]:
    """A function ``(field values in order) -> cls instance`` for a frozen dataclass.

    Like :func:`qbb.codec.frozen_new` (the values are already validated, so neither
    ``__init__`` nor ``__post_init__`` runs), but generated per class, the way
    :mod:`dataclasses` generates ``__init__``: one dict store per field is about twice
    as fast as ``__dict__.update(zip(...))``.
    """
    names = tuple(f.name for f in dataclasses.fields(cls))
    stores = "".join(f"    attrs[{name!r}] = {name}\n" for name in names)
    source = (f"def new_{cls.__name__}({', '.join(names)}):\n"
              f"    obj = new(cls)\n    attrs = obj.__dict__\n{stores}    return obj\n")
    namespace = {"new": object.__new__, "cls": cls}
    exec(source, namespace)  # noqa: S102 - names are the dataclass's own field names
    return namespace[f"new_{cls.__name__}"]


_new_header, _new_router = _constructor(LsaHeader), _constructor(RouterLSA)
_new_link, _new_tos = _constructor(RouterLink), _constructor(TosMetric)
_new_summary, _new_unknown = _constructor(SummaryLSA), _constructor(UnknownLSA)
_new_packet, _new_hello = _constructor(OspfPacket), _constructor(Hello)
_new_dd, _new_request = _constructor(DatabaseDescription), _constructor(LsRequest)
_new_lsr, _new_lsu = _constructor(LinkStateRequest), _constructor(LinkStateUpdate)
_new_ack = _constructor(LinkStateAck)

# bounded caches between the 4 wire bytes and the dotted quad of an address
_CACHE_MAX = 4096
_ATON: dict[str, bytes] = {}
_NTOA: dict[bytes, str] = {}
_ip = _NTOA.get


def _aton(text: Any) -> bytes:
    """4 bytes of a canonical dotted quad (cached); anything else is rejected."""
    raw = socket.inet_aton(text)
    if socket.inet_ntoa(raw) != text:
        raise _Reject
    if len(_ATON) >= _CACHE_MAX:
        _ATON.clear()
    _ATON[text] = raw
    return raw


def _ntoa(raw: bytes) -> str:
    """The dotted quad of 4 bytes (cached)."""
    text = socket.inet_ntoa(raw)
    if len(_NTOA) >= _CACHE_MAX:
        _NTOA.clear()
    _NTOA[raw] = text
    return text


def _u8_flags(value: Any, top: int) -> int:
    """A flag field: an ``int`` with no bit above ``top`` (the construct FlagField rule)."""
    if not isinstance(value, int) or not 0 <= value <= top:
        raise _Reject
    return value


def _plain_bytes(data: Any) -> bytes:
    """``data`` as ``bytes`` when it is a flat byte buffer; otherwise reject."""
    if type(data) is bytes:
        return data
    if isinstance(data, bytearray) or (
            isinstance(data, memoryview) and data.ndim == 1 and data.itemsize == 1):
        return bytes(data)
    raise _Reject


# -- LSA decoding --------------------------------------------------------------------------

def _header_at(data: bytes, at: int) -> LsaHeader:
    age, options, ls_type, lsid, adv, seq, checksum, length = _LSA_HEADER.unpack_from(data, at)
    if length < 20:
        raise _Reject
    return _new_header(_LS_TYPES[ls_type], _ip(lsid) or _ntoa(lsid), _ip(adv) or _ntoa(adv),
                       seq, age, _OPTIONS[options], checksum, length)


def _lsa_at(data: bytes, start: int) -> tuple[Any, int]:
    """The LSA at ``data[start:]`` (length, checksum and body checked) and its end."""
    age, options, ls_type, lsid, adv, seq, _, length = _LSA_HEADER.unpack_from(data, start)
    end = start + length
    if length < 20 or end > len(data) or not lsa_checksum_verifies(data, start, end):
        raise _Reject
    lsid, adv, options = _ip(lsid) or _ntoa(lsid), _ip(adv) or _ntoa(adv), _OPTIONS[options]
    if ls_type == 1:
        flags, links = _router_body(data, start + 20, end)
        return _new_router(lsid, adv, seq, age, options, flags, links), end
    if ls_type == 3 or ls_type == 4:
        mask, metric, tos = _summary_body(data, start + 20, end)
        return _new_summary(_LS_TYPES[ls_type], lsid, adv, metric, mask, seq, age, options,
                            tos), end
    body = data[start + 20:end]
    return _new_unknown(_LS_TYPES[ls_type], lsid, adv, seq, age, options, body), end


def _router_body(data: bytes, at: int, end: int) -> tuple[RouterFlags, tuple]:
    if at + 4 > end:
        raise _Reject
    flags, reserved, count = _ROUTER_FIXED.unpack_from(data, at)
    if flags > 7 or reserved:
        raise _Reject
    at, links = at + 4, []
    for _ in range(count):
        if at + 12 > end:
            raise _Reject
        link_id, link_data, link_type, tos_count, metric = _ROUTER_LINK.unpack_from(data, at)
        at += 12
        tos = ()
        if tos_count:
            tos, at = _router_tos(data, at, end, tos_count)
        links.append(_new_link(_ip(link_id) or _ntoa(link_id),
                               _ip(link_data) or _ntoa(link_data),
                               _LINK_TYPES[link_type], metric, tos))
    if at != end:
        raise _Reject
    return _ROUTER_FLAGS[flags], tuple(links)


def _router_tos(data: bytes, at: int, end: int, count: int) -> tuple[tuple, int]:
    if at + 4 * count > end:
        raise _Reject
    entries = []
    for tos, reserved, metric in _ROUTER_TOS.iter_unpack(data[at:at + 4 * count]):
        if reserved:
            raise _Reject
        entries.append(_new_tos(tos, metric))
    return tuple(entries), at + 4 * count


def _summary_body(data: bytes, at: int, end: int) -> tuple[str, int, tuple]:
    if end - at < 8 or (end - at) % 4:
        raise _Reject
    mask, metric = _SUMMARY_FIXED.unpack_from(data, at)
    if metric >> 24:  # the reserved octet
        raise _Reject
    tos = tuple(_new_tos(value >> 24, value & 0xFFFFFF)
                for (value,) in _U32.iter_unpack(data[at + 8:end]))
    return _ip(mask) or _ntoa(mask), metric, tos


# -- LSA encoding --------------------------------------------------------------------------

def _lsa_bytes(lsa: Any) -> bytes:
    """The encoded LSA, length and Fletcher checksum filled in."""
    cls = type(lsa)
    if cls is RouterLSA:
        ls_type, body = 1, _router_bytes(lsa)
    elif cls is SummaryLSA:
        ls_type, body = lsa.ls_type, _summary_bytes(lsa)
        if ls_type not in _SUMMARY_TYPES:
            raise _Reject
    elif cls is UnknownLSA:
        ls_type, body = lsa.ls_type, lsa.body
        if type(body) is not bytes or ls_type in _KNOWN_BODIES:
            raise _Reject
    else:
        raise _Reject
    lsid, adv = lsa.link_state_id, lsa.advertising_router
    head = _LSA_HEADER.pack(
        lsa.ls_age, _u8_flags(lsa.options, 0xFF), ls_type,
        _ATON.get(lsid) or _aton(lsid), _ATON.get(adv) or _aton(adv),
        lsa.ls_sequence_number, 0, 20 + len(body))
    checksum = check_octets(head[2:] + body, 14)
    return b"".join((head[:16], checksum.to_bytes(2, "big"), head[18:], body))


def _router_bytes(lsa: RouterLSA) -> bytes:
    links = lsa.links
    parts = [_ROUTER_FIXED.pack(_u8_flags(lsa.flags, 7), 0, len(links))]
    for link in links:
        if type(link) is not RouterLink:
            raise _Reject
        link_id, link_data, tos = link.link_id, link.link_data, link.tos_metrics
        parts.append(_ROUTER_LINK.pack(
            _ATON.get(link_id) or _aton(link_id), _ATON.get(link_data) or _aton(link_data),
            _LINK_TYPE_CODES[link.link_type], len(tos), link.metric))
        for entry in tos:
            if type(entry) is not TosMetric:
                raise _Reject
            parts.append(_ROUTER_TOS.pack(entry.tos, 0, entry.metric))
    return b"".join(parts)


def _u24(value: Any) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFF:
        raise _Reject
    return value


def _summary_bytes(lsa: SummaryLSA) -> bytes:
    mask = lsa.network_mask
    parts = [_SUMMARY_FIXED.pack(_ATON.get(mask) or _aton(mask), _u24(lsa.metric))]
    for entry in lsa.tos_metrics:
        if type(entry) is not TosMetric:
            raise _Reject
        metric = _u24(entry.metric)
        parts.append(_SUMMARY_TOS.pack(entry.tos, metric >> 8, metric & 0xFF))
    return b"".join(parts)


def _header_bytes(header: Any) -> bytes:
    if type(header) is not LsaHeader:
        raise _Reject
    lsid, adv, length = header.link_state_id, header.advertising_router, header.length
    if not length >= 20:
        raise _Reject
    return _LSA_HEADER.pack(
        header.ls_age, _u8_flags(header.options, 0xFF), header.ls_type,
        _ATON.get(lsid) or _aton(lsid), _ATON.get(adv) or _aton(adv),
        header.ls_sequence_number, header.ls_checksum, length)


# -- LSA entry points ----------------------------------------------------------------------

def try_decode_lsa_header(data: Any) -> LsaHeader | None:
    """:func:`~qbb.routing.lsa.decode_lsa_header_spec`, or ``None``."""
    try:
        data = _plain_bytes(data)
        return _header_at(data, 0) if len(data) == 20 else None
    except _REJECT:
        return None


def try_decode_lsa_header_at(data: Any, start: int, end: int) -> LsaHeader | None:
    """:func:`~qbb.routing.lsa.decode_lsa_header_at_spec`, or ``None``."""
    try:
        data = _plain_bytes(data)
        if type(start) is not int or not 0 <= start == end - 20 or end > len(data):
            return None
        return _header_at(data, start)
    except _REJECT:
        return None


def try_encode_lsa_header(header: Any) -> bytes | None:
    """:func:`~qbb.routing.lsa.encode_lsa_header_spec`, or ``None``."""
    try:
        return _header_bytes(header)
    except _REJECT:
        return None


def try_decode_lsa(data: Any) -> Any:
    """:func:`~qbb.routing.lsa.decode_lsa_spec`, or ``None``."""
    try:
        data = _plain_bytes(data)
        lsa, end = _lsa_at(data, 0)
        return lsa if end == len(data) else None
    except _REJECT:
        return None


def try_decode_lsa_at(data: Any, start: int) -> tuple[Any, int] | None:
    """:func:`~qbb.routing.lsa.decode_lsa_at_spec`, or ``None``."""
    try:
        data = _plain_bytes(data)
        return _lsa_at(data, start) if type(start) is int and start >= 0 else None
    except _REJECT:
        return None


def try_encode_lsa(lsa: Any) -> bytes | None:
    """:func:`~qbb.routing.lsa.encode_lsa_spec`, or ``None``."""
    try:
        return _lsa_bytes(lsa)
    except _REJECT:
        return None


def try_lsa_header(lsa: Any) -> LsaHeader | None:
    """:func:`~qbb.routing.lsa.lsa_header_spec` of an LSA (not a header), or ``None``."""
    try:
        return _header_at(_lsa_bytes(lsa), 0)
    except _REJECT:
        return None


# -- packets -------------------------------------------------------------------------------

def _checked_headers(data: bytes, start: int) -> tuple[LsaHeader, ...]:
    if (len(data) - start) % 20:
        raise _Reject
    return tuple([_header_at(data, at) for at in range(start, len(data), 20)])


def _decode_hello(data: bytes) -> Hello:
    if len(data) < 44 or len(data) % 4:
        raise _Reject
    mask, interval, options, priority, dead, dr, bdr = _HELLO.unpack_from(data, 24)
    neighbors = tuple([_ip(raw) or _ntoa(raw)
                       for raw in (data[at:at + 4] for at in range(44, len(data), 4))])
    return _new_hello(_ip(mask) or _ntoa(mask), interval, _OPTIONS[options], priority, dead,
                      _ip(dr) or _ntoa(dr), _ip(bdr) or _ntoa(bdr), neighbors)


def _decode_dd(data: bytes) -> DatabaseDescription:
    mtu, options, flags, sequence = _DD_FIXED.unpack_from(data, 24)
    return _new_dd(mtu, sequence, _OPTIONS[options], _DD_FLAGS[flags],
                   _checked_headers(data, 32))


def _decode_lsr(data: bytes) -> LinkStateRequest:
    if (len(data) - 24) % 12:
        raise _Reject
    requests = tuple([
        _new_request(_LS_TYPES[ls_type], _ip(lsid) or _ntoa(lsid), _ip(adv) or _ntoa(adv))
        for ls_type, lsid, adv in _LS_REQUEST.iter_unpack(data[24:])])
    return _new_lsr(requests)


def _decode_lsu(data: bytes) -> LinkStateUpdate:
    (count,) = _U32.unpack_from(data, 24)
    at, lsas = 28, []
    for _ in range(count):
        lsa, at = _lsa_at(data, at)
        lsas.append(lsa)
    if at != len(data):
        raise _Reject
    return _new_lsu(tuple(lsas))


def _decode_lsack(data: bytes) -> LinkStateAck:
    return _new_ack(_checked_headers(data, 24))


_BODY_DECODERS = (None, _decode_hello, _decode_dd, _decode_lsr, _decode_lsu, _decode_lsack)


def try_decode_packet(data: Any) -> OspfPacket | None:
    """:func:`~qbb.routing.packet.decode_packet_spec`, or ``None``."""
    try:
        data = _plain_bytes(data)
        version, ptype, length, router, area, checksum, au_type, auth = \
            _HEADER.unpack_from(data)
        if version != 2 or length != len(data) or au_type > 1 or not 1 <= ptype <= 5:
            return None
        if checksum != internet_checksum(data[:12] + data[14:16] + data[24:]):
            return None
        return _new_packet(_ip(router) or _ntoa(router), _ip(area) or _ntoa(area),
                           _BODY_DECODERS[ptype](data), _AU_TYPES[au_type], auth)
    except _REJECT:
        return None


def _encode_hello(hello: Hello) -> bytes:
    mask, dr, bdr = (hello.network_mask, hello.designated_router,
                     hello.backup_designated_router)
    fixed = _HELLO.pack(
        _ATON.get(mask) or _aton(mask), hello.hello_interval,
        _u8_flags(hello.options, 0xFF), hello.router_priority, hello.router_dead_interval,
        _ATON.get(dr) or _aton(dr), _ATON.get(bdr) or _aton(bdr))
    return fixed + b"".join([_ATON.get(n) or _aton(n) for n in hello.neighbors])


def _encode_dd(dd: DatabaseDescription) -> bytes:
    fixed = _DD_FIXED.pack(dd.interface_mtu, _u8_flags(dd.options, 0xFF),
                           _u8_flags(dd.flags, 7), dd.dd_sequence_number)
    return fixed + b"".join([_header_bytes(h) for h in dd.lsa_headers])


def _encode_lsr(lsr: LinkStateRequest) -> bytes:
    parts = []
    for request in lsr.requests:
        if type(request) is not LsRequest or not 0 <= request.ls_type <= 0xFF:
            raise _Reject
        lsid, adv = request.link_state_id, request.advertising_router
        parts.append(_LS_REQUEST.pack(
            request.ls_type, _ATON.get(lsid) or _aton(lsid), _ATON.get(adv) or _aton(adv)))
    return b"".join(parts)


def _encode_lsu(lsu: LinkStateUpdate) -> bytes:
    return _U32.pack(len(lsu.lsas)) + b"".join([_lsa_bytes(lsa) for lsa in lsu.lsas])


def _encode_lsack(ack: LinkStateAck) -> bytes:
    return b"".join([_header_bytes(h) for h in ack.lsa_headers])


_BODY_ENCODERS = {Hello: _encode_hello, DatabaseDescription: _encode_dd,
                  LinkStateRequest: _encode_lsr, LinkStateUpdate: _encode_lsu,
                  LinkStateAck: _encode_lsack}


def try_encode_packet(packet: Any) -> bytes | None:
    """:func:`~qbb.routing.packet.encode_packet_spec`, or ``None``."""
    try:
        if type(packet) is not OspfPacket:
            return None
        body, auth = packet.body, packet.authentication
        if type(auth) is not bytes or len(auth) != 8:
            return None
        payload = _BODY_ENCODERS[type(body)](body)
        router, area = packet.router_id, packet.area_id
        head = _HEADER.pack(2, _TYPE_CODES[type(body)], 24 + len(payload),
                            _ATON.get(router) or _aton(router), _ATON.get(area) or _aton(area),
                            0, _AU_CODES[packet.au_type], auth)
        checksum = internet_checksum(head[:16] + payload)
        return b"".join((head[:12], checksum.to_bytes(2, "big"), head[14:], payload))
    except _REJECT:
        return None
