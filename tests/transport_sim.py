"""Virtual-time harnesses for QKDTL connections (no trio: a loop over ``now``).

* :class:`Pair` -- one initiator and one responder joined by a two-way channel with a
  fixed one-way delay and optional faults (loss, duplication, corruption through an
  encode/decode round trip).  The responder is created when the first SYN reaches it, as
  the node-level service does.  :meth:`Pair.run` advances time event by event.  Towards
  the responder the channel can also have a queue served at ``capacity`` segments/s,
  several ``paths`` that KEY segments take in turn (a per-packet load balancer: a path
  with more delay reorders the stream) and a delay ``spike`` (segments sent in a time
  interval are held until its end, as a link waiting for one-time pad holds its frames)
  or an ``outage`` (segments sent in a time interval are lost).
* :class:`Bottleneck` / :func:`simulate_flows` -- N connection pairs whose forward
  segments share one bottleneck queue that serves ``capacity`` segments per second, with
  a drop-tail buffer of ``buffer`` segments or, with ``mark_threshold``, CE marking of
  every segment that finds the queue at least that long (RFC 3168); ACKs return on an
  uncongested path.  Applications take every key as soon as it is released, so the
  flows are limited by congestion control alone.  Returns per-flow goodput and the
  fairness figures (Jain's index: ``(sum x)^2 / (n sum x^2)``).
* :func:`load_balanced_streams` -- not sans-IO: streams over a five-node
  :class:`~qbb.network.EmbeddedNetwork` ring under trio's ``MockClock``, with A's forwarder
  spreading them over two paths (docs/transport.md, "Reordering and delay spikes").
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field

from qbb.errors import DecodeError
from qbb.transport.connection import (Connection, ConnectionConfig, Endpoint, Role, State)
from qbb.transport.fastcodec import decode_segment_fast, encode_segment_fast
from qbb.transport.packet import ConnectRequest, Segment, SegmentFlags, ServiceClass

A_END = Endpoint("1.1.0.1", 40000)
B_END = Endpoint("1.2.0.1", 5000)
REQUEST = ConnectRequest(ServiceClass.BEST_EFFORT, 0, 0, "app")


def seeded_randbytes(seed: int):
    rng = random.Random(seed)
    return rng.randbytes


def deliver(conn: Connection, segment: Segment, now: float, mark: bool = False) -> None:
    """Hand ``segment`` to ``conn``; a fresh responder accepts a bare SYN."""
    if conn.role is Role.RESPONDER and conn.state is State.CLOSED and conn.ksid is None:
        if segment.flags & (SegmentFlags.SYN | SegmentFlags.ACK) == SegmentFlags.SYN:
            conn.accept_syn(segment, now)
        return
    conn.receive_segment(segment, now, congestion_mark=mark)


@dataclass
class Pair:
    """Initiator ``a`` and responder ``b`` over a channel of one-way ``delay`` seconds
    (FIFO unless ``reorder``); ``taken`` holds the keys each application took."""

    config: ConnectionConfig = field(default_factory=ConnectionConfig)
    delay: float = 0.01
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0  # share of segments delayed by up to one extra ``delay``
    seed: int = 1
    isn_a: int | None = None
    isn_b: int | None = None
    request: ConnectRequest | None = REQUEST
    responder_config: ConnectionConfig | None = None
    take_a: bool = True
    take_b: bool = True
    mark_next: int = 0  # CE-mark this many of the next KEY segments that reach b
    capacity: float = 0.0  # a -> b: segments/s through one FIFO queue (0: no queue)
    paths: tuple[float, ...] = ()  # a -> b: extra delay of each path, KEY segments in turn
    spike: tuple[float, float] | None = None  # a -> b segments sent in [t0, t1) arrive >= t1
    outage: tuple[float, float] | None = None  # a -> b segments sent in [t0, t1) are lost

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.a = Connection(A_END, B_END, Role.INITIATOR, self.config, request=self.request,
                            isn=self.isn_a, randbytes=seeded_randbytes(self.seed))
        self.b = Connection(B_END, A_END, Role.RESPONDER, self.responder_config or self.config,
                            isn=self.isn_b, randbytes=seeded_randbytes(self.seed + 1))
        self.now = 0.0
        self.wire: list = []  # heap of (time, n, destination, bytes)
        self.counter = itertools.count()
        self.taken = {"a": [], "b": []}
        self.events = {"a": [], "b": []}
        self.dropped = 0
        self.sent: list[tuple[str, Segment]] = []  # everything either end transmitted
        self.busy_until = 0.0
        self.key_segments_sent = 0

    def _transmit(self, src: str, segments: list[Segment]) -> None:
        for segment in segments:
            self.sent.append((src, segment))
            data = encode_segment_fast(segment)
            lost = src == "a" and self.outage is not None and \
                self.outage[0] <= self.now < self.outage[1]
            if self.rng.random() < self.loss or lost:
                self.dropped += 1
                continue
            copies = 2 if self.rng.random() < self.duplicate else 1
            for _ in range(copies):
                if self.rng.random() < self.corrupt:
                    bit = self.rng.randrange(len(data) * 8)
                    data = bytes(b ^ (1 << (bit % 8)) if i == bit // 8 else b
                                 for i, b in enumerate(data))
                jitter = self.rng.random() * self.delay if self.rng.random() < self.reorder \
                    else 0.0
                at = self._departure(segment) if src == "a" else self.now
                heapq.heappush(self.wire, (at + self.delay + jitter,
                                           next(self.counter), "b" if src == "a" else "a", data))

    def _departure(self, segment: Segment) -> float:
        """When a segment from a leaves the queue, the spike and its path (a -> b)."""
        at = self.now
        if self.capacity:
            self.busy_until = max(self.busy_until, at) + 1 / self.capacity
            at = self.busy_until
        if self.spike is not None and self.spike[0] <= self.now < self.spike[1]:
            at = max(at, self.spike[1])
        if self.paths and segment.flags & SegmentFlags.KEY:
            at += self.paths[self.key_segments_sent % len(self.paths)]
            self.key_segments_sent += 1
        return at

    def flush(self) -> None:
        """Drain both ends' output and events; applications take keys if asked."""
        for name, conn in (("a", self.a), ("b", self.b)):
            if (self.take_a if name == "a" else self.take_b):
                self.taken[name].extend(conn.take_keys(conn.keys_available()))
            self._transmit(name, conn.segments_to_send(self.now))
            self.events[name].extend(conn.events())

    def step(self, until: float) -> bool:
        """Advance to the next event no later than ``until``; False if there was none."""
        times = [t for t in (self.a.next_timer(), self.b.next_timer()) if t is not None]
        if self.wire:
            times.append(self.wire[0][0])
        if not times or min(times) > until:
            self.now = until
            return False
        self.now = max(self.now, min(times))
        while self.wire and self.wire[0][0] <= self.now:
            _, _, dst, data = heapq.heappop(self.wire)
            try:
                segment = decode_segment_fast(data)
            except DecodeError:
                continue
            mark = dst == "b" and self.mark_next > 0 and bool(segment.flags & SegmentFlags.KEY)
            self.mark_next -= mark
            deliver(self.a if dst == "a" else self.b, segment, self.now, mark)
            self.flush()
        for conn in (self.a, self.b):
            due = conn.next_timer()
            if due is not None and due <= self.now:
                conn.handle_timer(self.now)
        self.flush()
        return True

    def run(self, until: float, max_steps: int = 1_000_000) -> None:
        for _ in range(max_steps):
            if not self.step(until):
                return
        raise AssertionError("simulation did not settle")

    def start(self) -> None:
        self.a.open(self.now)
        self.flush()


# --- the bottleneck fairness simulation --------------------------------------------------

@dataclass
class Bottleneck:
    """A FIFO served at ``capacity`` segments/s; drop-tail at ``buffer`` or CE marking."""

    capacity: float
    buffer: int
    mark_threshold: int | None = None
    queue: list = field(default_factory=list)  # (flow, segment, mark)
    busy_until: float = 0.0
    drops: int = 0
    marks: int = 0

    def offer(self, flow: int, segment: Segment, now: float) -> None:
        if len(self.queue) >= self.buffer:
            self.drops += 1
            return
        mark = self.mark_threshold is not None and len(self.queue) >= self.mark_threshold
        self.marks += mark
        if not self.queue:
            self.busy_until = max(self.busy_until, now)
        self.queue.append((flow, segment, mark))

    def next_departure(self) -> float | None:
        return self.busy_until + 1 / self.capacity if self.queue else None

    def depart(self) -> tuple[int, Segment, bool]:
        self.busy_until += 1 / self.capacity
        return self.queue.pop(0)


def jain(values: list[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


def simulate_flows(n: int, *, capacity: float = 200.0, buffer: int = 25, delay: float = 0.02,
                   duration: float = 60.0, stagger: float = 2.0, mark_threshold: int | None = None,
                   keys_per_segment: int = 4, seed: int = 7, bin_width: float = 5.0) -> dict:
    """Run ``n`` flows through one bottleneck; goodput per flow over the second half
    (and per ``bin_width`` seconds in ``series``, to watch the flows converge)."""
    config = ConnectionConfig(key_bits=256, keys_per_segment=keys_per_segment,
                              buffer_bits=1 << 22, idle_timeout=1e6)
    flows = []
    for i in range(n):
        a = Connection(Endpoint("1.1.0.1", 40000 + i), Endpoint("1.2.0.1", 5000 + i),
                       Role.INITIATOR, config, request=REQUEST, isn=(i * 0x9E3779B9) & 0xFFFFFFFF,
                       randbytes=seeded_randbytes(seed + i))
        b = Connection(Endpoint("1.2.0.1", 5000 + i), Endpoint("1.1.0.1", 40000 + i),
                       Role.RESPONDER, config, isn=i * 7919, randbytes=seeded_randbytes(seed))
        flows.append((a, b))
    link = Bottleneck(capacity, buffer, mark_threshold)
    acks: list = []  # heap (time, n, flow, segment)
    forward: list = []  # heap: after the bottleneck, propagation to b
    count = itertools.count()
    half = duration / 2
    delivered_half = [0] * n
    bins = [[0] * n for _ in range(int(duration / bin_width) + 1)]
    started = [False] * n
    now = 0.0

    def drain(i: int) -> None:
        a, b = flows[i]
        b_keys = b.take_keys(b.keys_available())
        if now >= half:
            delivered_half[i] += len(b_keys)
        bins[int(now / bin_width)][i] += len(b_keys)
        a.take_keys(a.keys_available())
        for segment in a.segments_to_send(now):
            link.offer(i, segment, now)
        for segment in b.segments_to_send(now):
            heapq.heappush(acks, (now + delay, next(count), i, segment))
        a.events(), b.events()

    while now < duration:
        candidates = [link.next_departure(), acks[0][0] if acks else None,
                      forward[0][0] if forward else None]
        candidates += [i * stagger for i in range(n) if not started[i]]
        candidates += [t for a, b in flows for t in (a.next_timer(), b.next_timer())
                       if t is not None]
        now = max(now, min(t for t in candidates if t is not None))
        for i in range(n):
            if not started[i] and now >= i * stagger:
                started[i] = True
                flows[i][0].open(now)
                drain(i)
        while link.queue and link.next_departure() <= now:
            i, segment, mark = link.depart()
            heapq.heappush(forward, (now + delay, next(count), i, (segment, mark)))
        while forward and forward[0][0] <= now:
            _, _, i, (segment, mark) = heapq.heappop(forward)
            deliver(flows[i][1], segment, now, mark)
            drain(i)
        while acks and acks[0][0] <= now:
            _, _, i, segment = heapq.heappop(acks)
            flows[i][0].receive_segment(segment, now)
            drain(i)
        for i, (a, b) in enumerate(flows):
            for conn in (a, b):
                due = conn.next_timer()
                if due is not None and due <= now:
                    conn.handle_timer(now)
                    drain(i)
    goodput = [keys / keys_per_segment / (duration - half) for keys in delivered_half]
    return {"flows": n, "goodput_segments_per_s": goodput, "jain": jain(goodput),
            "utilisation": sum(goodput) / capacity, "drops": link.drops, "marks": link.marks,
            "states": [a.state.value for a, _ in flows],
            "series": [[keys / keys_per_segment / bin_width for keys in row] for row in bins],
            "cwnd": [round(a.send.cc.cwnd, 2) for a, _ in flows]}


# --- cost of the connection core ----------------------------------------------------------

def core_throughput(config: ConnectionConfig, seconds: float = 2.0) -> dict:
    """Keys per second through an initiator and a responder joined back to back (no codec,
    no delay, applications take every key): the cost of the sans-IO core alone."""
    import os
    import time
    a = Connection(A_END, B_END, Role.INITIATOR, config, request=REQUEST, isn=1,
                   randbytes=os.urandom)
    b = Connection(B_END, A_END, Role.RESPONDER, config, isn=2)
    now = 0.0
    a.open(now)
    segments = a.segments_to_send(now)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        now += 0.001
        for segment in segments:
            deliver(b, segment, now)
        b.take_keys(b.keys_available())
        for segment in b.segments_to_send(now):
            a.receive_segment(segment, now)
        a.take_keys(a.keys_available())
        segments = a.segments_to_send(now)
    elapsed = time.perf_counter() - start
    keys = a.send.stats["keys_acked"]
    return {"key_bits": config.key_bits, "keys_per_segment": config.segment_keys,
            "keys_per_s": keys / elapsed, "mbit_per_s": keys * config.key_bits / elapsed / 1e6,
            "segments_per_s": a.send.stats["transmissions"] / elapsed}


# --- streams over a load-balanced ring (embedded network, virtual time) ------------------

def load_balanced_streams(streams: int = 4, duration: float = 20.0,
                          critical_bps: float | None = 300e3,
                          buffer_bits: int = 1 << 20) -> dict:
    """``streams`` connections A -> C on a five-node ring (1 Mbit/s QKD links) for
    ``duration`` seconds of virtual time, applications taking every key; with
    ``critical_bps`` A's link to B has that critical load (the others 800 kbit/s, fixed),
    so A's forwarder spreads the streams' packets over A-B-C and A-E-D-C (seed 002
    §2.5.3).  Returns delivered keys and the initiators' and responders' counters."""
    import contextlib

    import trio
    import trio.testing

    from qbb.keyapi.model import ApiError, Qos
    from qbb.netlayer.forwarding import ForwarderConfig
    from qbb.network import EmbeddedNetwork
    from qbb.node import NodeConfig
    from qbb.topology import LinkSpec, NodeSpec, Topology

    names = "ABCDE"
    ring = Topology("ring", tuple(NodeSpec(x, 1) for x in names),
                    tuple(LinkSpec(names[i], names[(i + 1) % 5]) for i in range(5)))
    out: dict = {}

    async def main() -> None:
        net = EmbeddedNetwork(ring, transport_config=ConnectionConfig(buffer_bits=buffer_bits),
                              config=NodeConfig(forwarder=ForwarderConfig(
                                  critical_load_bps=800e3)))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            await net.wait_converged(timeout=30)
            drivers, a = net.transports, net.nodes["A"]
            drivers["C"].backend.register("app")
            while drivers["A"].directory.resolve("app") is None:
                await trio.sleep(0.05)
            via = {p: net.plan.link("A", p).address_of("A") for p in "BE"}
            if critical_bps is not None:
                a.forwarder.set_critical_load(via["B"], critical_bps)
            ksids = []
            for _ in range(streams):
                async with trio.open_nursery() as inner:
                    inner.start_soon(drivers["C"].backend.accept, "app", 10)
                    ksids.append(await drivers["A"].backend.open_connect(
                        "app", Qos(key_chunk_size=256, timeout_s=10)))
            sent = dict(a.forwarder.sent_by_interface)
            got: dict = {}

            async def take(node: str, ksid: str, until: float) -> None:
                keys, backend = got.setdefault((node, ksid), []), drivers[node].backend
                while trio.current_time() < until:
                    with contextlib.suppress(ApiError):  # TIMEOUT: a stalled stream
                        keys += await backend.get_keys(ksid, 4096, 1.0)

            until = trio.current_time() + duration
            async with trio.open_nursery() as inner:
                for ksid in ksids:
                    inner.start_soon(take, "A", ksid, until)
                    inner.start_soon(take, "C", ksid, until)
            ini = [drivers["A"].service.streams[k].connection.status() for k in ksids]
            res = [drivers["C"].service.streams[k].connection.status() for k in ksids]
            keys = sum(len(got["A", k]) for k in ksids)
            out.update(
                keys=keys, kbit_per_s=keys * 256 / duration / 1e3,
                identical=all(got["A", k] == got["C", k][:len(got["A", k])] for k in ksids),
                packets_via={p: a.forwarder.sent_by_interface[i] - sent.get(i, 0)
                             for p, i in via.items()},
                cwnd=[s["cwnd"] for s in ini], dupthresh=[s.get("dupthresh") for s in ini],
                **{name: sum(s.get(name, 0) for s in ini) for name in (
                    "transmissions", "retransmits", "fast_retransmits", "rto_expirations",
                    "undone", "spurious_retransmits", "spurious_timeouts")},
                duplicates_received=sum(s["duplicates"] for s in res),
                out_of_order_received=sum(s["out_of_order"] for s in res))
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out
