"""Trio-free virtual-time simulator of a Q3P link: two endpoints over a faulty channel.

* :class:`Ledger` / :class:`RecordingStore`: every key range a store hands out (``take`` at
  the sender, ``get`` at the receiver), across restarts, to prove no key byte is used twice.
* :class:`Channel`: loss, duplication, reordering (random extra delay) and corruption (one
  flipped bit), from a seeded RNG.
* :class:`LinkSim`: nodes ``"A"`` (192.0.2.1, the key-store initiator) and ``"B"``
  (192.0.2.2); each has emulated devices, a persisted key store (:mod:`qbb.q3p.persist`)
  and a :class:`~qbb.q3p.endpoint.Q3PEndpoint`.  :meth:`LinkSim.run` advances virtual
  time event by event (datagram arrivals and endpoint timers); :meth:`LinkSim.crash`
  replaces a node by a new instance restored from its store file.
* Messages from :meth:`LinkSim.send` carry ``(sender, instance, channel, seq)`` and a
  filler derived from them, so :meth:`LinkSim.check_delivery` can verify content, order and
  completeness.
"""

from __future__ import annotations

import bisect
import heapq
import random
import struct
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbb.q3p.config import LinkConfig
from qbb.q3p.device import DeviceGroup
from qbb.q3p.endpoint import Q3PEndpoint
from qbb.q3p.events import Delivered, KeyStarved, LinkDown, LinkUp
from qbb.q3p.keystore import KeyStoreConfig, LinkKeyStore
from qbb.q3p.persist import KeyStoreFile

IDS = {"A": "192.0.2.1", "B": "192.0.2.2"}
PEER = {"A": "B", "B": "A"}
LINK_SEED = b"q3p-sim-link-seed"
HEADER = struct.Struct(">2sBIBI")  # magic, sender (0/1), instance, channel, seq
MAGIC = b"QS"


class Ledger:
    """Key ranges handed out per node: ``taken`` (encryption pool), ``got`` (decryption)."""

    def __init__(self) -> None:
        self.taken: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.got: dict[str, list[tuple[int, int]]] = defaultdict(list)

    @staticmethod
    def overlaps(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        ordered = sorted(ranges)
        return [(a, b) for a, b in zip(ordered, ordered[1:]) if a[0] + a[1] > b[0]]

    def check(self) -> None:
        for node in IDS:
            assert not self.overlaps(self.taken[node]), f"{node} took key twice"
            assert not self.overlaps(self.got[node]), f"{node} used decryption key twice"

    def check_gets_were_taken(self, node: str) -> None:
        """Every range ``node`` decrypted with lies within ranges its peer took."""
        taken = sorted(self.taken[PEER[node]])
        starts = [lo for lo, _ in taken]
        for lo, n in self.got[node]:
            i = bisect.bisect_right(starts, lo) - 1
            assert i >= 0 and lo + n <= taken[i][0] + taken[i][1], (node, lo, n)


class RecordingStore:
    """A :class:`LinkKeyStore` whose ``take`` and ``get`` are written to a ledger."""

    def __init__(self, store: LinkKeyStore, ledger: Ledger, node: str) -> None:
        self._store, self._ledger, self._node = store, ledger, node

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def take(self, n: int) -> tuple[int, bytes]:
        offset, key = self._store.take(n)
        self._ledger.taken[self._node].append((offset, n))
        return offset, key

    def get(self, offset: int, n: int) -> bytes:
        key = self._store.get(offset, n)
        self._ledger.got[self._node].append((offset, n))
        return key


@dataclass
class Channel:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.005
    jitter: float = 0.02

    def arrivals(self, rng: random.Random, now: float, data: bytes) -> list[tuple[float, bytes]]:
        out = []
        for _ in range(2 if rng.random() < self.duplicate else 1):
            if rng.random() < self.loss:
                continue
            copy = data
            if rng.random() < self.corrupt and data:
                bit = rng.randrange(8 * len(data))
                copy = bytearray(data)
                copy[bit >> 3] ^= 1 << (bit & 7)
                copy = bytes(copy)
            extra = rng.random() * self.jitter if rng.random() < self.reorder else 0.0
            out.append((now + self.delay + extra, copy))
        return out


@dataclass
class Node:
    name: str
    instance: int
    endpoint: Q3PEndpoint
    store_file: KeyStoreFile
    delivered: list[tuple[int, bytes]] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)


class LinkSim:
    """Two endpoints joined by a faulty virtual-time channel."""

    def __init__(self, seed: int = 0, *, rate_bps: float = 8e6, key_ratio: int = 500,
                 channel: Channel | None = None, start: float = 1.0,
                 directory: str | None = None, lease: int = 1 << 16, **config: Any) -> None:
        self.rng = random.Random(seed)
        self.channel = channel or Channel()
        self.now = start
        self.rate_bps, self.key_ratio, self.lease = rate_bps, key_ratio, lease
        self.config = config
        self.ledger = Ledger()
        # store files hold key material: a temporary directory removed with the simulator
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="q3p-sim-")
        self._dir = Path(directory or self._tmp.name)
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._counter = 0
        self.tap: list[tuple[str, bytes]] = []  # (destination, datagram) as sent
        self.sent: dict[tuple[str, int], dict[int, list[int]]] = {}
        self.received: dict[tuple[str, int], list[tuple[int, int, int, int]]] = {}
        self.nodes: dict[str, Node] = {}
        self.instances = {"A": 0, "B": 0}
        for name in IDS:
            self.nodes[name] = self._boot(name, None)

    # -- nodes ---------------------------------------------------------------------------

    def link_config(self, name: str) -> LinkConfig:
        return LinkConfig(IDS[name], IDS[PEER[name]], 7, **self.config)

    def _boot(self, name: str, store: LinkKeyStore | None) -> Node:
        path = self._dir / f"{name}.store"
        store_file = KeyStoreFile(path)
        if store is None:
            store = LinkKeyStore(KeyStoreConfig(name == "A", key_ratio=self.key_ratio,
                                                lease=self.lease, capacity=4 << 20,
                                                dec_slack=1 << 20, compact_block=1 << 16))
            store_file.attach(store)
            store_file.save(store)
        devices = DeviceGroup(LINK_SEED, [self.rate_bps])
        endpoint = Q3PEndpoint(self.link_config(name), RecordingStore(store, self.ledger, name),
                               devices, nonce=self.rng.getrandbits(64))
        self.instances[name] += 1
        node = Node(name, self.instances[name], endpoint, store_file)
        self.sent[(name, node.instance)] = defaultdict(list)
        self.received[(name, node.instance)] = []
        endpoint.start(self.now)
        self._flush(node)
        return node

    def crash(self, name: str) -> None:
        """Kill ``name`` without saving; a new instance resumes from its store file."""
        store = KeyStoreFile(self._dir / f"{name}.store").load()
        self.nodes[name] = self._boot(name, store)

    # -- traffic -------------------------------------------------------------------------

    def send(self, name: str, size: int, *, channel: int = 0, priority: int = 0,
             encrypt: bool = False) -> bool:
        node = self.nodes[name]
        seqs = self.sent[(name, node.instance)][channel]
        payload = message(name, node.instance, channel, len(seqs), size)
        ok = node.endpoint.send(payload, self.now, priority=priority, channel=channel,
                                encrypt=encrypt)
        if ok:
            seqs.append(len(seqs))
        self.flush(name)
        return ok

    def inject(self, dest: str, data: bytes, delay: float = 0.0) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (self.now + delay, self._counter, dest, bytes(data)))

    def _transmit(self, src: str, data: bytes) -> None:
        dest = PEER[src]
        self.tap.append((dest, data))
        for when, copy in self.channel.arrivals(self.rng, self.now, data):
            self._counter += 1
            heapq.heappush(self._queue, (when, self._counter, dest, copy))

    def flush(self, name: str) -> None:
        """What a driver does after every input: send what the endpoint has ready."""
        self._flush(self.nodes[name])

    def _flush(self, node: Node) -> None:
        for data in node.endpoint.datagrams_to_send(self.now):
            self._transmit(node.name, data)
        for event in node.endpoint.events():
            node.events.append(event)
            if isinstance(event, Delivered):
                node.delivered.append((event.channel, event.payload))
                if event.payload[:2] == MAGIC:  # other payloads are the test's own
                    self.received[(node.name, node.instance)].append(parse(event))

    # -- virtual time ----------------------------------------------------------------------

    def _next_timer(self) -> tuple[float, Node | None]:
        best: tuple[float, Node | None] = (float("inf"), None)
        for node in self.nodes.values():
            when = node.endpoint.next_timer()
            if when is not None and when < best[0]:
                best = (when, node)
        return best

    def run(self, duration: float, max_steps: int = 200_000) -> None:
        """Process arrivals and timers until ``now + duration``."""
        until = self.now + duration
        same, last = 0, None
        for _ in range(max_steps):
            when, node = self._next_timer()
            arrival = self._queue[0][0] if self._queue else float("inf")
            step = min(when, arrival)
            if step > until:
                self.now = until
                return
            self.now = max(self.now, step)
            same = same + 1 if self.now == last else 0
            last = self.now
            assert same < 5000, f"no progress at t={self.now}"
            if arrival <= when:
                _, _, dest, data = heapq.heappop(self._queue)
                target = self.nodes[dest]
                target.endpoint.receive_datagram(data, self.now)
                self._flush(target)
            else:
                node.endpoint.handle_timer(self.now)
                self._flush(node)
        raise AssertionError("simulation did not reach its end time")

    def quiet(self) -> bool:
        """Both ends up with nothing queued or in flight."""
        return all(node.endpoint.state == "up" and not node.endpoint.status()["queued"]
                   and not node.endpoint.status()["in_flight"] for node in self.nodes.values())

    def settle(self, limit: float = 120.0, step: float = 0.5) -> None:
        """Run until :meth:`quiet` (or ``limit`` seconds)."""
        end = self.now + limit
        while self.now < end:
            self.run(step)
            if self.quiet():
                self.run(step)
                return

    # -- checks ----------------------------------------------------------------------------

    def check_delivery(self, complete: bool = False) -> None:
        """Content intact; per receiver instance, sender instance and channel the delivered
        sequence numbers are a contiguous increasing run; ``complete``: every message of
        each sender's current instance reached some instance of the receiver."""
        for (name, _), items in self.received.items():
            runs: dict[tuple[int, int], list[int]] = defaultdict(list)
            for sender, instance, channel, seq in items:
                assert sender == PEER[name]
                runs[(instance, channel)].append(seq)
            for key, seqs in runs.items():
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (name, key, seqs)
        if complete:
            for name, node in self.nodes.items():
                got = {(i, c, s) for (rx, _), items in self.received.items() if rx == PEER[name]
                       for _, i, c, s in items}
                for channel, seqs in self.sent[(name, node.instance)].items():
                    missing = [s for s in seqs if (node.instance, channel, s) not in got]
                    assert not missing, (name, channel, missing[:10])

    def check_keys(self) -> None:
        self.ledger.check()
        for node in self.nodes.values():
            assert not node.endpoint.counters.get("internal_error"), node.endpoint.counters

    def link_events(self, name: str) -> list[Any]:
        return [e for e in self.nodes[name].events
                if isinstance(e, (LinkUp, LinkDown, KeyStarved))]


def message(sender: str, instance: int, channel: int, seq: int, size: int) -> bytes:
    head = HEADER.pack(MAGIC, "AB".index(sender), instance, channel, seq)
    filler = random.Random(f"{sender}{instance}.{channel}.{seq}").randbytes(max(0, size))
    return head + filler


def parse(event: Delivered) -> tuple[str, int, int, int]:
    _, sender, instance, channel, seq = HEADER.unpack_from(event.payload)
    assert channel == event.channel
    size = len(event.payload) - HEADER.size
    assert event.payload == message("AB"[sender], instance, channel, seq, size), "corrupted"
    return "AB"[sender], instance, channel, seq
