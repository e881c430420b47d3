"""Network-wide registration of server applications (SECOQC seed 002 §3.4, Figs. 15-16).

In SECOQC's *registration phase* a server application registers itself (name, port) with
its QBB node, and "the registration information is then propagated across the entire QKD
network", so that in the *connection phase* any client's node can find the node and port
of the application it names.  :class:`Directory` is that propagation, sans-IO (``now`` is
an argument; no clock, no I/O): inputs are :meth:`Directory.register`,
:meth:`~Directory.unregister`, :meth:`~Directory.set_peers` (node addresses this node has
a route to), :meth:`~Directory.receive` (an announcement from another node) and
:meth:`~Directory.handle_timer`; outputs are ``(destination, payload)`` datagrams from
:meth:`~Directory.datagrams` and :meth:`~Directory.next_timer`.

Theory of operation (a tiny link-state protocol, one "LSA" per node):

* Each node announces the *whole set* of its registrations as one :class:`Announcement`,
  stamped ``(incarnation, sequence)`` and a ``lifetime``.  The service sends it as a QKDTL
  datagram (no SYN/ACK; source and destination port :data:`DIRECTORY_PORT`) to every peer:
  on change (coalesced: one message per flush), every ``interval`` seconds (default 30 s,
  lifetime 90 s: two losses in a row are survived), at once to a peer that becomes
  reachable, and to an origin heard from for the first time (or in a new incarnation), so a
  node that restarts learns the directory in one round trip instead of one interval.
* A receiver keeps, per origin node, the newest announcement: ``(incarnation, sequence)``
  compared lexicographically; newer replaces (withdrawal is an announcement without the
  name), equal refreshes the expiry, older is ignored (``stale``).  Entries expire
  ``lifetime`` seconds after the last refresh; lifetime 0 withdraws the origin at once.
* ``incarnation`` (u64) is chosen by the driver at start (wall-clock microseconds), so a
  restarted node's announcements are newer than its previous life's even though its
  ``sequence`` starts again at 0.
* Names registered at two nodes: every node picks the same one, the lowest node address
  (32-bit compare); ``conflicts`` counts each time a name became ambiguous.
* Areas (seed §2.3): a node's peers are the QBB nodes in its routing table (router
  routes), so other areas' nodes, hidden behind area summaries, are not among them.  An
  area border node (peers in two or more areas) therefore *relays* every newer
  announcement it receives straight from its origin to its peers in the areas the origin
  is not in; the message names its ``origin``.  A node that learns a new origin this way
  announces itself to that origin directly (it has a route to it), and from then on the
  two refresh each other directly; the border node only bootstraps.

Wire format (payload of the QKDTL datagram, big-endian; docs/transport-service.md)::

    0  version = 1 (u8)   1  flags = 0 (u8)   2  count (u16)   4  origin (IPv4 address)
    8  incarnation (u64)  16 sequence (u32)   20 lifetime s (u16)   22 reserved = 0
    24 count x { port (u16), name length (u8, 1..255), name (UTF-8) }, names strictly
       increasing as bytes (canonical), ports nonzero

:func:`decode_directory` raises only :class:`~qbb.errors.DecodeError` and is canonical:
whatever it accepts re-encodes to the same bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import construct as c

from qbb.codec import IPv4Address, build, fail, parse
from qbb.errors import DecodeError, EncodeError
from qbb.routing.table import ip_int

__all__ = ["Announcement", "DIRECTORY_PORT", "Directory", "Registration", "decode_directory",
           "encode_directory"]

LAYER = "QKDTL-DIR"
DIRECTORY_PORT = 8
VERSION = 1
HEADER_LEN = 24
MAX_ENTRIES = 240  # 240 x (3 + 255) + 24 bytes fit one QKDNL packet
MAX_NAME_BYTES = 255

_ENTRY = c.Struct(
    "port" / c.Int16ub,
    "name_length" / c.Rebuild(c.Int8ub, c.len_(c.this.name)),
    "name" / c.Bytes(c.this.name_length),
)
_MESSAGE = c.Struct(
    "version" / c.Const(VERSION, c.Int8ub),
    "flags" / c.Const(0, c.Int8ub),
    "count" / c.Rebuild(c.Int16ub, c.len_(c.this.entries)),
    "origin" / IPv4Address,
    "incarnation" / c.Int64ub,
    "sequence" / c.Int32ub,
    "lifetime" / c.Int16ub,
    "reserved" / c.Const(0, c.Int16ub),
    "entries" / c.Array(c.this.count, _ENTRY),
)


@dataclass(frozen=True, order=True)
class Registration:
    """Server application ``name`` listens on QKDTL ``port`` of the announcing node."""

    name: str
    port: int


@dataclass(frozen=True)
class Announcement:
    """All registrations of node ``origin``; ``entries`` sorted by UTF-8 name, unique."""

    origin: str
    incarnation: int
    sequence: int
    lifetime: int
    entries: tuple[Registration, ...] = ()


def _name_bytes(entry: Registration) -> bytes:
    if not isinstance(entry.name, str) or not entry.name:
        raise EncodeError(LAYER, "entries.name", f"must be a non-empty str: {entry.name!r}")
    try:
        raw = entry.name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise EncodeError(LAYER, "entries.name", str(error)) from None
    if len(raw) > MAX_NAME_BYTES:
        raise EncodeError(LAYER, "entries.name", f"{len(raw)} bytes exceed {MAX_NAME_BYTES}")
    return raw


def encode_directory(message: Announcement) -> bytes:
    """Announcement -> bytes; EncodeError for unsorted/duplicate names or bad values."""
    names = [_name_bytes(entry) for entry in message.entries]
    if any(a >= b for a, b in zip(names, names[1:])):
        raise EncodeError(LAYER, "entries", "names must be unique and sorted (as UTF-8 bytes)")
    if len(names) > MAX_ENTRIES:
        raise EncodeError(LAYER, "entries", f"{len(names)} entries exceed {MAX_ENTRIES}")
    for entry in message.entries:
        if not isinstance(entry.port, int) or not 1 <= entry.port <= 0xFFFF:
            raise EncodeError(LAYER, "entries.port", f"must be 1..65535, got {entry.port!r}")
    entries = [dict(port=e.port, name=n) for e, n in zip(message.entries, names)]
    return build(_MESSAGE, dict(origin=message.origin, incarnation=message.incarnation,
                                sequence=message.sequence,
                                lifetime=message.lifetime, entries=entries), LAYER)


def _check_entries(value) -> tuple[Registration, ...]:
    offset, previous, entries = HEADER_LEN, None, []
    for entry in value.entries:
        if entry.port == 0:
            fail(LAYER, "entries.port", offset, "port 0 is not a port")
        if not entry.name:
            fail(LAYER, "entries.name", offset + 3, "empty application name")
        if previous is not None and entry.name <= previous:
            fail(LAYER, "entries.name", offset + 3, "names not strictly increasing")
        try:
            name = entry.name.decode("utf-8")
        except UnicodeDecodeError as error:
            fail(LAYER, "entries.name", offset + 3 + error.start, "invalid UTF-8")
        entries.append(Registration(name, entry.port))
        previous, offset = entry.name, offset + 3 + len(entry.name)
    return tuple(entries)


def decode_directory(data: bytes) -> Announcement:
    """Bytes -> Announcement (raises only DecodeError; canonical)."""
    value = parse(_MESSAGE, data, LAYER)
    if len(value.entries) > MAX_ENTRIES:
        fail(LAYER, "count", 2, f"{len(value.entries)} entries exceed {MAX_ENTRIES}")
    return Announcement(value.origin, value.incarnation, value.sequence, value.lifetime,
                        _check_entries(value))


@dataclass
class _Origin:
    """What one remote node announced last."""

    stamp: tuple[int, int]
    expires: float
    entries: dict[str, int] = field(default_factory=dict)
    raw: bytes = field(default=b"", repr=False)  # as heard from the origin itself (relaying)


class Directory:
    """Registrations of this node and, with expiry, of every other (module docstring)."""

    def __init__(self, address: str, *, incarnation: int = 0, interval: float = 30.0,
                 lifetime: float = 90.0) -> None:
        if not 0 < interval < lifetime <= 0xFFFF:
            raise ValueError("need 0 < interval < lifetime <= 65535 s")
        self.address, self.interval, self.lifetime = address, interval, lifetime
        self.incarnation, self.sequence = incarnation & (2 ** 64 - 1), 0
        self.local: dict[str, int] = {}
        self.origins: dict[str, _Origin] = {}
        self.peers: dict[str, str] = {}  # address -> area of its router route ("" unknown)
        self.counters: Counter[str] = Counter()
        self._pending: set[str] = set()
        self._relays: list[tuple[str, bytes]] = []
        self._next_announce = 0.0
        self._message: bytes | None = None

    # -- local registrations ---------------------------------------------------------

    def register(self, name: str, port: int, now: float) -> None:
        """Add (or move) local registration ``name`` and announce the change."""
        if len(self.local) >= MAX_ENTRIES and name not in self.local:
            raise ValueError(f"at most {MAX_ENTRIES} registrations per node")
        _name_bytes(Registration(name, port))  # EncodeError for an unusable name
        before = self.conflicted()
        self.local[name] = port
        self._changed(before)

    def unregister(self, name: str, now: float) -> bool:
        """Withdraw local registration ``name``; False if there was none."""
        if self.local.pop(name, None) is None:
            return False
        self._changed(self.conflicted())
        return True

    def _changed(self, conflicted_before: set[str]) -> None:
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        self._message = None
        self._pending |= self._targets()
        self._count_conflicts(conflicted_before)

    def announcement(self) -> Announcement:
        entries = sorted((Registration(n, p) for n, p in self.local.items()),
                         key=lambda e: e.name.encode("utf-8"))
        return Announcement(self.address, self.incarnation, self.sequence, int(self.lifetime),
                            tuple(entries))

    # -- peers, timers, output -------------------------------------------------------

    def _targets(self) -> set[str]:
        return set(self.peers) | set(self.origins)

    def set_peers(self, peers: Mapping[str, str] | Iterable[str], now: float) -> None:
        """The QBB nodes in the routing table (address -> area of the route, or just
        addresses); new ones get an announcement at once."""
        if not isinstance(peers, Mapping):
            peers = dict.fromkeys(peers, "")
        peers = {p: area for p, area in peers.items() if p != self.address}
        new = set(peers) - set(self.peers)
        self._pending |= new
        self.peers = peers
        if new and self.is_border():  # bring the new peers what this border node heard
            for origin, held in self.origins.items():
                if held.raw:
                    self._relay(origin, held.raw, new)

    def is_border(self) -> bool:
        """Peers in two or more areas: this node relays between them."""
        return len(set(self.peers.values())) > 1

    def next_timer(self) -> float | None:
        expiries = [origin.expires for origin in self.origins.values()]
        return min([self._next_announce, *expiries])

    def handle_timer(self, now: float) -> None:
        if now >= self._next_announce:
            self._pending |= self._targets()
            self._next_announce = now + self.interval
        expired = [a for a, origin in self.origins.items() if origin.expires <= now]
        for address in expired:
            del self.origins[address]
            self.counters["expired"] += 1

    def datagrams(self) -> list[tuple[str, bytes]]:
        """Drain: ``(destination address, payload)`` announcements (own, relayed) to send."""
        out, self._relays = self._relays, []
        if self._pending:
            if self._message is None:
                self._message = encode_directory(self.announcement())
            out += [(address, self._message) for address in sorted(self._pending, key=ip_int)]
            self.counters["announcements_sent"] += len(self._pending)
            self._pending.clear()
        return out

    # -- input -----------------------------------------------------------------------

    def receive(self, source: str, payload: bytes, now: float) -> bool:
        """An announcement sent by node ``source``; False (counted) if it was dropped."""
        try:
            message = decode_directory(payload)
        except DecodeError:
            self.counters["malformed"] += 1
            return False
        if message.origin == self.address:
            self.counters["own"] += 1
            return False
        newer = self._accept(message, now)
        held = self.origins.get(message.origin)
        if source == message.origin and held is not None \
                and held.stamp == (message.incarnation, message.sequence):
            held.raw = bytes(payload)
        if newer and source == message.origin and self.is_border():
            self._relay(message.origin, bytes(payload), self.peers)
        return True

    def _relay(self, origin: str, payload: bytes, to: Iterable[str]) -> None:
        """Forward ``origin``'s announcement to those of ``to`` in areas it is not in."""
        home = self.peers.get(origin)  # None: the origin is in no area of ours
        for peer in sorted(to, key=ip_int):
            if peer != origin and self.peers.get(peer) != home:
                self._relays.append((peer, payload))
                self.counters["relayed"] += 1

    def _accept(self, message: Announcement, now: float) -> bool:
        """Apply ``message``; True if it was newer than what was held."""
        origin = message.origin
        stamp, held = (message.incarnation, message.sequence), self.origins.get(origin)
        if held is not None and stamp < held.stamp:
            self.counters["stale"] += 1
            return False
        if held is not None and stamp == held.stamp:
            held.expires = now + message.lifetime
            self.counters["refreshed"] += 1
            if message.lifetime == 0:
                del self.origins[origin]
            return False
        if held is None or held.stamp[0] != message.incarnation:
            self._pending.add(origin)  # new node or restarted node: tell it what we have
        before = self.conflicted()
        if message.lifetime == 0:
            self.origins.pop(origin, None)
            self.counters["withdrawn"] += 1
        else:
            entries = {e.name: e.port for e in message.entries}
            self.origins[origin] = _Origin(stamp, now + message.lifetime, entries)
            self.counters["updated"] += 1
        self._count_conflicts(before)
        return True

    # -- lookup ----------------------------------------------------------------------

    def holders(self, name: str) -> list[tuple[str, int]]:
        """Every ``(node address, port)`` that registered ``name``, lowest address first."""
        found = [(a, o.entries[name]) for a, o in self.origins.items() if name in o.entries]
        if name in self.local:
            found.append((self.address, self.local[name]))
        return sorted(found, key=lambda item: ip_int(item[0]))

    def resolve(self, name: str) -> tuple[str, int] | None:
        """Where ``name`` is registered: the lowest node address among its holders."""
        holders = self.holders(name)
        return holders[0] if holders else None

    def resolve_at(self, name: str, address: str) -> int | None:
        """The port of ``name`` at node ``address`` if known here."""
        return dict(self.holders(name)).get(address)

    def names(self) -> dict[str, list[tuple[str, int]]]:
        """The whole directory: name -> holders (lowest address first)."""
        every = set(self.local).union(*(o.entries for o in self.origins.values()))
        return {name: self.holders(name) for name in sorted(every)}

    def conflicted(self) -> set[str]:
        """Names registered at more than one node."""
        seen: Counter[str] = Counter(self.local)
        for origin in self.origins.values():
            seen.update(origin.entries.keys())
        return {name for name, count in seen.items() if count > 1}

    def _count_conflicts(self, before: set[str]) -> None:
        self.counters["conflicts"] += len(self.conflicted() - before)

    def status(self) -> dict:
        return {"incarnation": self.incarnation, "sequence": self.sequence,
                "local": dict(sorted(self.local.items())), "peers": sorted(self.peers, key=ip_int),
                "border": self.is_border(),
                "names": {n: [list(h) for h in hs] for n, hs in self.names().items()},
                "conflicted": sorted(self.conflicted()), "counters": dict(self.counters)}
