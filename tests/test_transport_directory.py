"""The registration directory (qbb/transport/directory.py): codec and sans-IO protocol."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbb.errors import DecodeError, EncodeError
from qbb.transport.directory import (Announcement, Directory, Registration, decode_directory,
                                     encode_directory)

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: len(s.encode()) <= 255)


@st.composite
def announcements(draw) -> Announcement:
    chosen = draw(st.dictionaries(names, st.integers(1, 0xFFFF), max_size=8))
    entries = sorted((Registration(n, p) for n, p in chosen.items()),
                     key=lambda e: e.name.encode())
    origin = ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
    return Announcement(origin, draw(st.integers(0, 2 ** 64 - 1)),
                        draw(st.integers(0, 2 ** 32 - 1)), draw(st.integers(0, 0xFFFF)),
                        tuple(entries))


@settings(max_examples=100)
@given(announcements())
def test_codec_round_trip(message):
    assert decode_directory(encode_directory(message)) == message


@settings(max_examples=100)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_decode_error_canonically(data):
    try:
        message = decode_directory(data)
    except DecodeError as error:
        assert error.layer == "QKDTL-DIR" and 0 <= error.offset <= len(data)
        return
    assert encode_directory(message) == data


@settings(max_examples=100)
@given(announcements(), st.data())
def test_mutated_encodings_never_raise_anything_but_decode_error(message, data):
    raw = bytearray(encode_directory(message))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            assert encode_directory(decode_directory(candidate)) == candidate
        except DecodeError:
            pass


def test_byte_layout_and_canonical_checks():
    raw = encode_directory(Announcement("1.1.0.5", 5, 2, 90, (Registration("a", 1024),
                                                               Registration("b", 1025))))
    assert raw.hex() == ("01000002" "01010005" "0000000000000005" "00000002" "005a" "0000"
                         "0400" "01" "61" "0401" "01" "62")
    swapped = raw[:24] + raw[28:] + raw[24:28]  # b before a: not canonical
    with pytest.raises(DecodeError) as error:
        decode_directory(swapped)
    assert error.value.field == "entries.name" and error.value.offset == 31
    zero_port = raw[:24] + b"\x00\x00" + raw[26:]
    with pytest.raises(DecodeError, match="port 0"):
        decode_directory(zero_port)
    with pytest.raises(DecodeError):
        decode_directory(raw[:1] + b"\x01" + raw[2:])  # flags must be 0
    with pytest.raises(EncodeError):
        encode_directory(Announcement(A0, 1, 1, 1, (Registration("b", 1), Registration("a", 2))))
    with pytest.raises(EncodeError):
        encode_directory(Announcement(A0, 1, 1, 1, (Registration("a", 1), Registration("a", 2))))


# --- the protocol among N sans-IO directories ------------------------------------------

ADDRESSES = [f"1.1.0.{4 * i + 1}" for i in range(5)]
A0 = ADDRESSES[0]


class Mesh:
    """N directories; ``deliver`` moves every pending datagram (optionally dropping some)."""

    def __init__(self, n: int = 5, **kwargs) -> None:
        self.dirs = {a: Directory(a, incarnation=1, **kwargs) for a in ADDRESSES[:n]}
        self.now = 0.0
        self.down: set[str] = set()
        for d in self.dirs.values():
            d.set_peers(self.dirs, self.now)

    def deliver(self) -> int:
        moved = 0
        for _ in range(10):
            batch = [(src, dst, p) for src, d in self.dirs.items() for dst, p in d.datagrams()]
            if not batch:
                break
            for src, dst, payload in batch:
                if src not in self.down and dst not in self.down and dst in self.dirs:
                    self.dirs[dst].receive(src, payload, self.now)
                    moved += 1
        return moved

    def advance(self, seconds: float, step: float = 1.0) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for address, d in self.dirs.items():
                if address not in self.down and d.next_timer() <= self.now:
                    d.handle_timer(self.now)
            self.deliver()


def test_registrations_converge_everywhere():
    mesh = Mesh()
    mesh.deliver()
    a, c = ADDRESSES[0], ADDRESSES[2]
    mesh.dirs[a].register("mail", 1024, mesh.now)
    mesh.dirs[c].register("vpn", 1025, mesh.now)
    mesh.deliver()
    for d in mesh.dirs.values():
        assert d.resolve("mail") == (a, 1024)
        assert d.resolve("vpn") == (c, 1025)
        assert d.resolve("nothing") is None
        assert d.resolve_at("vpn", c) == 1025 and d.resolve_at("vpn", a) is None


def test_periodic_refresh_keeps_entries_and_silence_expires_them():
    mesh = Mesh(3, interval=30.0, lifetime=90.0)
    a, b = ADDRESSES[0], ADDRESSES[1]
    mesh.dirs[a].register("mail", 1024, mesh.now)
    mesh.advance(300)
    assert mesh.dirs[b].resolve("mail") == (a, 1024)
    assert mesh.dirs[b].counters["refreshed"] >= 8
    mesh.down.add(a)  # a stops announcing (crash without withdrawal)
    mesh.advance(40)  # last refresh at t=271: still within its 90 s lifetime
    assert mesh.dirs[b].resolve("mail") == (a, 1024)
    mesh.advance(50)
    assert mesh.dirs[b].resolve("mail") is None
    assert mesh.dirs[b].counters["expired"] >= 1


def test_withdrawal_on_unregister_and_stale_messages_ignored():
    mesh = Mesh(3)
    a, b = ADDRESSES[0], ADDRESSES[1]
    mesh.dirs[a].register("mail", 1024, mesh.now)
    old = mesh.dirs[a].datagrams()[0][1]
    mesh.deliver()
    mesh.dirs[a].unregister("mail", mesh.now)
    mesh.deliver()
    assert all(d.resolve("mail") is None for d in mesh.dirs.values())
    assert mesh.dirs[b].receive(a, old, mesh.now)  # reordered old announcement
    assert mesh.dirs[b].resolve("mail") is None and mesh.dirs[b].counters["stale"] == 1
    assert not mesh.dirs[a].unregister("mail", mesh.now)


def test_conflicting_names_resolve_to_the_lowest_address_everywhere():
    mesh = Mesh(4)
    high, low = ADDRESSES[3], ADDRESSES[1]
    mesh.dirs[high].register("db", 2000, mesh.now)
    mesh.deliver()
    mesh.dirs[low].register("db", 3000, mesh.now)
    mesh.deliver()
    for d in mesh.dirs.values():
        assert d.resolve("db") == (low, 3000)
        assert d.holders("db") == [(low, 3000), (high, 2000)]
        assert d.conflicted() == {"db"} and d.counters["conflicts"] == 1
    mesh.dirs[low].unregister("db", mesh.now)
    mesh.deliver()
    assert all(d.resolve("db") == (high, 2000) for d in mesh.dirs.values())


def test_restarted_node_announces_again_and_learns_the_directory_at_once():
    mesh = Mesh(3)
    a, b = ADDRESSES[0], ADDRESSES[1]
    mesh.dirs[a].register("mail", 1024, mesh.now)
    mesh.dirs[b].register("old", 1030, mesh.now)
    mesh.advance(5)
    mesh.now += 1
    fresh = mesh.dirs[b] = Directory(b, incarnation=2)  # sequence restarts at 0
    fresh.register("new", 1031, mesh.now)
    fresh.set_peers(ADDRESSES[:3], mesh.now)
    mesh.deliver()  # well before the next periodic round
    assert fresh.resolve("mail") == (a, 1024)
    for d in mesh.dirs.values():
        assert d.resolve("new") == (b, 1031) and d.resolve("old") is None


def test_lifetime_zero_withdraws_an_origin_and_own_messages_are_ignored():
    d = Directory(ADDRESSES[0])
    src = ADDRESSES[1]
    d.receive(src, encode_directory(Announcement(src, 1, 1, 90, (Registration("x", 1500),))),
              0.0)
    assert d.resolve("x") == (src, 1500)
    d.receive(src, encode_directory(Announcement(src, 1, 2, 0, ())), 1.0)
    assert d.resolve("x") is None and d.counters["withdrawn"] == 1
    own = Announcement(ADDRESSES[0], 9, 9, 90, ())
    assert not d.receive(src, encode_directory(own), 1.0)
    assert not d.receive(src, b"\x01garbage", 1.0) and d.counters["malformed"] == 1


def test_border_node_relays_between_areas_then_nodes_talk_directly():
    """Area 1: a1, a2 and border b; area 2: b, c1.  a1 and c1 see only their own area."""
    a1, a2, b, c1 = "1.1.0.1", "1.1.0.5", "1.1.0.9", "1.2.0.1"
    mesh = Mesh(0)
    mesh.dirs = {x: Directory(x, incarnation=1) for x in (a1, a2, b, c1)}
    area1, area2 = "0.0.0.1", "0.0.0.2"
    mesh.dirs[a1].set_peers({a2: area1, b: area1}, 0.0)
    mesh.dirs[a2].set_peers({a1: area1, b: area1}, 0.0)
    mesh.dirs[c1].set_peers({b: area2}, 0.0)
    mesh.dirs[a1].register("mail", 1024, 0.0)
    mesh.dirs[c1].register("vpn", 2000, 0.0)
    mesh.deliver()  # b has no peers yet: it hears but cannot relay
    assert mesh.dirs[c1].resolve("mail") is None
    mesh.dirs[b].set_peers({a1: area1, a2: area1, c1: area2}, 0.0)  # b's routes come up
    mesh.deliver()
    assert mesh.dirs[b].is_border() and mesh.dirs[b].counters["relayed"] >= 3
    for d in mesh.dirs.values():
        assert d.resolve("mail") == (a1, 1024) and d.resolve("vpn") == (c1, 2000)
    assert c1 in mesh.dirs[a1].origins and a1 in mesh.dirs[c1].origins
    relayed = mesh.dirs[b].counters["relayed"]
    mesh.advance(300)  # periodic refreshes go directly: nothing expires, no more relaying
    assert mesh.dirs[b].counters["relayed"] == relayed
    assert mesh.dirs[c1].resolve("mail") == (a1, 1024)
    assert mesh.dirs[a2].resolve("vpn") == (c1, 2000)
    mesh.dirs[a1].unregister("mail", mesh.now)
    mesh.deliver()
    assert all(d.resolve("mail") is None for d in mesh.dirs.values())
    assert all(not d.is_border() for x, d in mesh.dirs.items() if x != b)
