"""The OSPF ``struct`` fast path (qbb.routing.fastpath) against the construct specification.

The fast path is only trusted for what it accepts: every ``try_*`` function must accept
every valid message, and whatever it accepts (valid, random, mutated or damaged input)
the ``*_spec`` function must produce identically -- same bytes, equal values with the
same ``repr`` (so the same enum and flag types).  The public functions must then behave
exactly like the specification everywhere: same value, or the same exception with the
same field, offset and reason.  Also: the loop-free Fletcher sums against the RFC 905
loop, and every import order of the three modules that import each other.
"""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import strategies_ospf as so
from hypothesis import given
from hypothesis import strategies as st

from qbb.errors import DecodeError, EncodeError
from qbb.routing import fastpath as fast
from qbb.routing import lsa as L
from qbb.routing import packet as P
from qbb.routing.checksum import (
    fletcher_checkbytes, fletcher_sums, lsa_checksum, lsa_checksum_verifies,
    verify_lsa_checksum)
from qbb.routing.common import Options
from qbb.routing.lsa import (
    LinkType, LsaHeader, LsType, RouterFlags, RouterLink, RouterLSA, SummaryLSA, TosMetric,
    UnknownLSA)
from qbb.routing.packet import (
    AuType, DatabaseDescription, DdFlags, Hello, LinkStateAck, LinkStateRequest,
    LinkStateUpdate, LsRequest, OspfPacket)


def outcome(func, *args):
    """What ``func(*args)`` does: its value (and repr), or its exception's details."""
    try:
        value = func(*args)
    except DecodeError as error:
        return ("DecodeError", error.field, error.offset, error.reason)
    except EncodeError as error:
        return ("EncodeError", error.field, error.reason)
    except Exception as error:  # noqa: BLE001 - e.g. TypeError from the specification
        return (type(error).__name__, str(error))
    return ("ok", value, repr(value))


def assert_fast_decode_sound(try_fast, spec, *args):
    """Whatever the fast path accepts, the specification decodes to the same value."""
    found = try_fast(*args)
    if found is not None:
        assert outcome(spec, *args) == ("ok", found, repr(found))


# -- Fletcher checksum: loop-free sums equal the RFC 905 loop --------------------------

def reference_sums(data: bytes) -> tuple[int, int]:
    c0 = c1 = 0
    for octet in data:
        c0 = (c0 + octet) % 255
        c1 = (c1 + c0) % 255
    return c0, c1


def reference_checkbytes(data: bytes, offset: int) -> int:
    data = data[:offset] + b"\x00\x00" + data[offset + 2:]
    length = len(data)
    c0 = sum(data) % 255
    c1 = sum((length - i) * octet for i, octet in enumerate(data)) % 255
    x = ((length - offset - 1) * c0 - c1) % 255 or 255
    y = (c1 - (length - offset) * c0) % 255 or 255
    return (x << 8) | y


@given(st.one_of(st.binary(max_size=300), st.integers(0, 700).map(lambda n: b"\xff" * n)))
def test_fletcher_sums_match_the_loop(data):
    assert fletcher_sums(data) == reference_sums(data)


@given(st.binary(min_size=2, max_size=200), st.data())
def test_checkbytes_match_the_reference(data, draw):
    offset = draw.draw(st.integers(0, len(data) - 2))
    assert fletcher_checkbytes(data, offset) == reference_checkbytes(data, offset)


@given(so.lsas(), st.binary(max_size=8), st.binary(max_size=8), st.integers(0, 0xFFFF))
def test_checksum_verification_by_sums(lsa, before, after, stored):
    raw = L.encode_lsa_spec(lsa)
    for candidate in (raw, raw[:16] + stored.to_bytes(2, "big") + raw[18:]):
        buffer = before + candidate + after
        assert lsa_checksum_verifies(buffer, len(before), len(before) + len(candidate)) == \
            verify_lsa_checksum(candidate)
    assert lsa_checksum(raw) == int.from_bytes(raw[16:18], "big")


# -- encoding: same bytes, and the fast path accepts every valid object ----------------

@given(so.lsas())
def test_encode_lsa_agrees(lsa):
    raw = L.encode_lsa_spec(lsa)
    assert fast.try_encode_lsa(lsa) == raw == L.encode_lsa(lsa)
    header = L.lsa_header_spec(lsa)
    assert fast.try_lsa_header(lsa) is not None
    assert outcome(L.lsa_header, lsa) == ("ok", header, repr(header))


@given(so.lsa_headers())
def test_encode_lsa_header_agrees(header):
    raw = L.encode_lsa_header_spec(header)
    assert fast.try_encode_lsa_header(header) == raw == L.encode_lsa_header(header)


@given(so.packets())
def test_encode_packet_agrees(packet):
    raw = P.encode_packet_spec(packet)
    assert fast.try_encode_packet(packet) == raw == P.encode_packet(packet)


# Values that some field somewhere cannot carry, or carries only via a spec quirk.
BAD_VALUES = [
    -1, 8, 256, 1 << 16, 1 << 24, 1 << 31, -(1 << 31) - 1, 1 << 32, 2.0, 1.5, None, "x",
    "1.2.3", "01.2.3.4", "1.2.3.4 ", "256.1.1.1", "1.2.3.4\x00", True, False, b"\x00" * 8,
    b"short", bytearray(8), memoryview(b"12345678"), [], (), [1, 2], 0, 2, 3, 4, 7,
    LsType.ROUTER, AuType.CRYPTOGRAPHIC, "0.0.0.0", object(), np.int64(2), np.uint8(1),
    LinkType.VIRTUAL]


@st.composite
def damaged(draw, objects):
    """A valid object with one field, possibly deep inside, replaced by a bad value."""
    return _damage(draw, draw(objects))


def _damage(draw, obj):
    fields = [f.name for f in dataclasses.fields(obj)]
    name = draw(st.sampled_from(fields))
    value = getattr(obj, name)
    inner = [i for i, item in enumerate(value) if dataclasses.is_dataclass(item)] \
        if isinstance(value, tuple) else []
    if dataclasses.is_dataclass(value) and draw(st.booleans()):
        new = _damage(draw, value)
    elif inner and draw(st.booleans()):
        index = draw(st.sampled_from(inner))
        new = value[:index] + (_damage(draw, value[index]),) + value[index + 1:]
    else:
        new = draw(st.sampled_from(BAD_VALUES))
    result = copy.copy(obj)
    object.__setattr__(result, name, new)
    return result


@given(damaged(so.packets()))
def test_encode_damaged_packets(packet):
    expected = outcome(P.encode_packet_spec, packet)
    assert outcome(P.encode_packet, packet) == expected
    raw = fast.try_encode_packet(packet)
    if raw is not None:
        assert expected[:2] == ("ok", raw)


@given(damaged(st.one_of(so.lsas(), so.lsa_headers())))
def test_encode_damaged_lsas_and_headers(item):
    if isinstance(item, L.LsaHeader):
        pairs = [(L.encode_lsa_header, L.encode_lsa_header_spec, fast.try_encode_lsa_header)]
    else:
        pairs = [(L.encode_lsa, L.encode_lsa_spec, fast.try_encode_lsa),
                 (L.lsa_header, L.lsa_header_spec, fast.try_lsa_header)]
    for public, spec, try_fast in pairs:
        expected = outcome(spec, item)
        assert outcome(public, item) == expected
        found = try_fast(item)
        if found is not None:
            assert expected == ("ok", found, repr(found))


def test_encode_error_fields_come_from_the_specification():
    hello = P.Hello(network_mask="255.255.255.0", hello_interval=1 << 16)
    packet = P.OspfPacket(router_id="1.1.1.1", area_id="0.0.0.0", body=hello)
    with pytest.raises(EncodeError) as info:
        P.encode_packet(packet)
    assert info.value.field == "hello.hello_interval"
    lsa = L.RouterLSA(link_state_id="1.1.1.1", advertising_router="1.1.1.1", flags=8)
    assert outcome(L.encode_lsa, lsa) == outcome(L.encode_lsa_spec, lsa)
    assert outcome(L.encode_lsa, lsa)[:2] == ("EncodeError", "lsa.router.flags")


# -- decoding: same values, and the same error for everything else ---------------------

@given(so.packets())
def test_decode_valid_packets(packet):
    raw = P.encode_packet_spec(packet)
    found = fast.try_decode_packet(raw)
    assert found is not None and repr(found) == repr(P.decode_packet_spec(raw))
    assert found == packet == P.decode_packet(raw)
    for view in (bytearray(raw), memoryview(raw)):
        assert fast.try_decode_packet(view) == packet
    if len(raw) % 2 == 0:  # a memoryview of 16-bit items: len() counts items, not bytes
        view = memoryview(raw).cast("H")
        assert outcome(P.decode_packet, view) == outcome(P.decode_packet_spec, view)
        assert_fast_decode_sound(fast.try_decode_packet, P.decode_packet_spec, view)


@given(so.lsas())
def test_decode_valid_lsas(lsa):
    raw = L.encode_lsa_spec(lsa)
    found = fast.try_decode_lsa(raw)
    assert found is not None and repr(found) == repr(L.decode_lsa_spec(raw))
    header = fast.try_decode_lsa_header(raw[:20])
    assert header is not None and repr(header) == repr(L.decode_lsa_header_spec(raw[:20]))


@given(so.lsas(), st.binary(max_size=30), st.binary(max_size=30))
def test_decode_lsa_at_offsets(lsa, before, after):
    raw = L.encode_lsa_spec(lsa)
    buffer, start = before + raw + after, len(before)
    found = fast.try_decode_lsa_at(buffer, start)
    assert found == (lsa, start + len(raw))
    assert outcome(L.decode_lsa_at, buffer, start, "x") == \
        outcome(L.decode_lsa_at_spec, buffer, start, "x")
    for end in (start + 20, start + 19, start + 21, len(buffer) + 1):
        args = (buffer, start, end, "lsu.lsas[3]")
        assert outcome(L.decode_lsa_header_at, *args) == \
            outcome(L.decode_lsa_header_at_spec, *args)
        found = fast.try_decode_lsa_header_at(buffer, start, end)
        if found is not None:
            assert outcome(L.decode_lsa_header_at_spec, *args) == ("ok", found, repr(found))
    for cut in (start, start + 7, max(start, len(buffer) - 1)):
        args = (buffer[:cut], start, "lsu.lsas[0]")
        assert outcome(L.decode_lsa_at, *args) == outcome(L.decode_lsa_at_spec, *args)
    for odd_start in (-len(raw) - len(after), -1, True):
        args = (buffer, odd_start, "x")
        assert outcome(L.decode_lsa_at, *args) == outcome(L.decode_lsa_at_spec, *args)


@st.composite
def lsu_with_mutated_lsa(draw):
    """An LS Update whose one LSA is mutated and resealed, the packet resealed too."""
    lsas = draw(st.lists(so.lsas(), min_size=1, max_size=3))
    index = draw(st.integers(0, len(lsas) - 1))
    parts = [L.encode_lsa_spec(lsa) for lsa in lsas]
    parts[index] = draw(st.sampled_from([lambda b: b, so.reseal_lsa]))(
        draw(so.mutated(parts[index])))
    body = len(lsas).to_bytes(4, "big") + b"".join(parts)
    return so.reseal_packet(bytes([2, 4]) + bytes(22) + body)


def packet_bytes():
    valid = so.packets().map(P.encode_packet_spec)
    mutated = valid.flatmap(so.mutated)
    return st.one_of(st.binary(max_size=120), valid, mutated, mutated.map(so.reseal_packet),
                     lsu_with_mutated_lsa(),
                     st.tuples(st.integers(1, 5), st.binary(max_size=90)).map(
                         lambda t: so.reseal_packet(bytes([2, t[0]]) + bytes(22) + t[1])))


@given(packet_bytes())
def test_decode_packets_agree(data):
    assert outcome(P.decode_packet, data) == outcome(P.decode_packet_spec, data)
    assert_fast_decode_sound(fast.try_decode_packet, P.decode_packet_spec, data)
    assert_fast_decode_sound(fast.try_decode_packet, P.decode_packet_spec, bytearray(data))


def lsa_bytes():
    valid = so.lsas().map(L.encode_lsa_spec)
    mutated = valid.flatmap(so.mutated)
    return st.one_of(st.binary(max_size=80), valid, mutated, mutated.map(so.reseal_lsa),
                     st.binary(min_size=20, max_size=60).map(so.reseal_lsa))


@given(lsa_bytes())
def test_decode_lsas_and_headers_agree(data):
    assert outcome(L.decode_lsa, data) == outcome(L.decode_lsa_spec, data)
    assert outcome(L.decode_lsa_header, data) == outcome(L.decode_lsa_header_spec, data)
    assert_fast_decode_sound(fast.try_decode_lsa, L.decode_lsa_spec, data)
    assert_fast_decode_sound(fast.try_decode_lsa_header, L.decode_lsa_header_spec, data)
    assert_fast_decode_sound(fast.try_decode_lsa_header, L.decode_lsa_header_spec, data[:20])


@pytest.mark.parametrize("value", [None, "text", 17, [1, 2], memoryview(b"ab").cast("H")])
def test_values_that_are_not_plain_bytes(value):
    for public, spec in ((P.decode_packet, P.decode_packet_spec),
                         (L.decode_lsa, L.decode_lsa_spec),
                         (L.decode_lsa_header, L.decode_lsa_header_spec)):
        assert outcome(public, value) == outcome(spec, value)


def test_deep_errors_keep_field_and_offset():
    lsu = P.OspfPacket(router_id="10.0.0.1", area_id="0.0.0.0", body=P.LinkStateUpdate((
        L.RouterLSA(link_state_id="10.0.0.1", advertising_router="10.0.0.1"),
        L.RouterLSA(link_state_id="10.0.0.2", advertising_router="10.0.0.2", links=(
            L.RouterLink(link_id="1.1.1.1", link_data="2.2.2.2",
                         link_type=L.LinkType.STUB, metric=1),)))))
    data = bytearray(P.encode_packet(lsu))
    data[84] = 9  # the second LSA's link type (52 + 20 + 4 + 8); reseal LSA and packet
    second = so.reseal_lsa(bytes(data[52:]))
    bad = so.reseal_packet(bytes(data[:52]) + second)
    with pytest.raises(DecodeError) as info:
        P.decode_packet(bad)
    assert (info.value.field, info.value.offset) == ("lsu.lsas[1].router.links.link_type", 84)
    assert outcome(P.decode_packet, bad) == outcome(P.decode_packet_spec, bad)


# -- the three modules import each other: every entry point works first ----------------

@pytest.mark.parametrize("module", ["qbb.routing.lsa", "qbb.routing.packet",
                                    "qbb.routing.fastpath", "qbb.routing.router"])
def test_import_order(module):
    script = (f"import {module}\n"
              "from qbb import samples\n"
              "from qbb.routing import lsa, packet\n"
              "for p in samples.ospf_samples().values():\n"
              "    raw = packet.encode_packet(p)\n"
              "    assert packet.decode_packet(raw) == p\n"
              "    for x in getattr(p.body, 'lsas', ()):\n"
              "        assert lsa.decode_lsa(lsa.encode_lsa(x)) == x\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# -- exhaustive checks over a small corpus: every field, every byte ----------------------

def _corpus_lsas():
    tos = (TosMetric(0, 7), TosMetric(255, 0xFFFF))
    links = (RouterLink(link_id="10.0.0.2", link_data="10.0.0.1",
                        link_type=LinkType.POINT_TO_POINT, metric=10, tos_metrics=tos),
             RouterLink(link_id="10.0.0.0", link_data="255.255.255.252",
                        link_type=LinkType.STUB, metric=0))
    common = dict(link_state_id="10.0.0.1", advertising_router="10.0.0.1",
                  ls_sequence_number=-0x7FFFFFFF, ls_age=3600, options=Options.E | Options.DC)
    return [
        RouterLSA(flags=RouterFlags.B | RouterFlags.E, links=links, **common),
        RouterLSA(**common),
        SummaryLSA(ls_type=LsType.SUMMARY_NETWORK, network_mask="255.255.0.0",
                   metric=0xFFFFFF, tos_metrics=(TosMetric(4, 0xABCDEF),), **common),
        SummaryLSA(ls_type=LsType.SUMMARY_ASBR, metric=1, **common),
        UnknownLSA(ls_type=LsType.NETWORK, body=bytes(range(8)), **common),
        UnknownLSA(ls_type=10, **common)]


def _corpus_packets():
    lsas = _corpus_lsas()
    headers = tuple(L.lsa_header_spec(lsa) for lsa in lsas[1:3])
    bodies = [
        Hello(network_mask="255.255.255.252", neighbors=("10.0.0.2", "10.0.0.3")),
        DatabaseDescription(interface_mtu=1500, dd_sequence_number=0xFFFFFFFF,
                            flags=DdFlags.I | DdFlags.MS, lsa_headers=headers),
        LinkStateRequest((LsRequest(1, "10.0.0.1", "10.0.0.1"),
                          LsRequest(LsType.SUMMARY_ASBR, "10.2.0.0", "10.0.0.9"))),
        LinkStateUpdate((lsas[0], lsas[2], lsas[4])),
        LinkStateAck(headers[:1])]
    simple = dict(au_type=AuType.SIMPLE, authentication=b"secret!!")
    return [OspfPacket(router_id="10.0.0.1", area_id="0.0.0.1", body=body,
                       **(simple if isinstance(body, Hello) else {})) for body in bodies]


def _paths(obj, prefix=()):
    """Every (path) to a field, recursing into nested dataclasses and their tuples."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        yield prefix + (field.name,)
        if dataclasses.is_dataclass(value):
            yield from _paths(value, prefix + (field.name,))
        elif isinstance(value, tuple):
            for index, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from _paths(item, prefix + (field.name, index))


def _replaced(obj, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        return obj[:head] + (_replaced(obj[head], rest, new),) + obj[head + 1:]
    result = copy.copy(obj)
    object.__setattr__(result, head, _replaced(getattr(obj, head), rest, new))
    return result


@pytest.mark.parametrize("kind", ["lsa", "packet"])
def test_every_field_with_every_bad_value(kind):
    if kind == "lsa":
        corpus = _corpus_lsas() + [L.lsa_header_spec(lsa) for lsa in _corpus_lsas()]
    else:
        corpus = _corpus_packets()
    for obj in corpus:
        for path in _paths(obj):
            for bad in BAD_VALUES:
                damaged_obj = _replaced(obj, path, bad)
                for public, spec, try_fast in _encoders(damaged_obj):
                    found = try_fast(damaged_obj)
                    expected = outcome(spec, damaged_obj)
                    if found is not None:
                        assert expected == ("ok", found, repr(found)), (path, bad)
                    assert outcome(public, damaged_obj) == expected, (path, bad)


def _encoders(obj):
    if isinstance(obj, OspfPacket):
        return [(P.encode_packet, P.encode_packet_spec, fast.try_encode_packet)]
    if isinstance(obj, LsaHeader):
        return [(L.encode_lsa_header, L.encode_lsa_header_spec, fast.try_encode_lsa_header)]
    return [(L.encode_lsa, L.encode_lsa_spec, fast.try_encode_lsa),
            (L.lsa_header, L.lsa_header_spec, fast.try_lsa_header)]


def _reseal_deep(data: bytes) -> bytes:
    """Recompute every LSA checksum of an LS Update over the bytes its length declares (as
    in :func:`_reseal_declared`), then the packet's length and checksum."""
    data = bytearray(data)
    at = 28
    while data[1:2] == b"\x04" and at + 20 <= len(data):
        data[at:] = _reseal_declared(bytes(data[at:]))
        length = int.from_bytes(data[at + 18:at + 20], "big")
        if length < 20:
            break
        at += length
    return so.reseal_packet(bytes(data))


def _reseal_declared(data: bytes) -> bytes:
    """Recompute an LSA's checksum over the bytes its length field declares (as far as
    present), leaving a wrong length field wrong: a checksum that verifies over a region
    shorter than a header or longer than the buffer."""
    size = min(int.from_bytes(data[18:20], "big"), len(data))
    if len(data) < 20 or size < 18:
        return data
    return data[:16] + fletcher_checkbytes(data[2:size], 14).to_bytes(2, "big") + data[18:]


def _variants(raw: bytes):
    """Every byte set to each single-bit flip and to 0, 1, 2, 0xFF; every truncation; a
    few extensions."""
    for pos, octet in enumerate(raw):
        for value in {octet ^ (1 << bit) for bit in range(8)} | {0, 1, 2, 0xFF}:
            yield raw[:pos] + bytes([value]) + raw[pos + 1:]
    for cut in range(len(raw)):
        yield raw[:cut]
    for extra in (b"\x00", b"\x00\x00", b"\x00\x00\x00", bytes(4), bytes(12), bytes(20)):
        yield raw + extra


@pytest.mark.parametrize("kind", ["lsa", "packet"])
def test_every_byte_mutation(kind):
    if kind == "lsa":
        corpus = [L.encode_lsa_spec(x) for x in _corpus_lsas()]
        reseals = (so.reseal_lsa, _reseal_declared)
        checks = [(fast.try_decode_lsa, L.decode_lsa_spec),
                  (fast.try_decode_lsa_header, L.decode_lsa_header_spec),
                  (lambda d: fast.try_decode_lsa_at(d, 0),
                   lambda d: L.decode_lsa_at_spec(d, 0, "a"))]
    else:
        corpus = [P.encode_packet_spec(x) for x in _corpus_packets()]
        reseals = (_reseal_deep,)
        checks = [(fast.try_decode_packet, P.decode_packet_spec)]
    for raw in corpus:
        assert checks[0][0](raw) is not None
        seen = set()
        for variant in _variants(raw):
            for data in (variant, *(reseal(variant) for reseal in reseals)):
                if data in seen:
                    continue
                seen.add(data)
                for try_fast, spec in checks:
                    assert_fast_decode_sound(try_fast, spec, data)


def test_checksum_octet_spelled_zero_is_rejected():
    found = set()
    for seq in range(3000):
        raw = L.encode_lsa_spec(RouterLSA(link_state_id="10.0.0.1",
                                          advertising_router="10.0.0.1",
                                          ls_sequence_number=seq))
        for at in (16, 17):
            if raw[at] == 0xFF and at not in found:
                found.add(at)
                alias = raw[:at] + b"\x00" + raw[at + 1:]
                assert fletcher_sums(alias[2:]) == (0, 0)
                assert fast.try_decode_lsa(alias) is None
                assert not lsa_checksum_verifies(alias, 0, len(alias))
                assert outcome(L.decode_lsa, alias)[:3] == ("DecodeError", "lsa.ls_checksum", 16)
    assert found == {16, 17}
