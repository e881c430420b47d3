"""Drivers of the sans-IO Q3P endpoint: trio loops for UDP and memory channels (seed 002 §3.1).

The Q3P endpoint (:class:`qbb.q3p.endpoint.Q3PEndpoint`) is a plain class: it never reads a
clock and never touches a socket (shared/DESIGN.md, "Sans-IO cores").  A driver supplies
the inputs -- datagrams from the peer, the time, timers, periodic key-store refills -- and
carries the outputs -- datagrams to the peer and events up.

Theory of operation (:class:`LinkDriver`)
    Two trio tasks share the endpoint (trio is single-threaded and the endpoint's methods
    never await, so no lock is needed):

    * the *receiver* waits for datagrams (a UDP socket or a trio memory channel), drains
      every datagram already queued (up to ``batch``) into ``receive_datagram`` and wakes the
      pump;
    * the *pump* sleeps until it is woken or the earliest deadline passes (the endpoint's
      ``next_timer()``, the next ``advance_keys`` tick every ``key_interval`` seconds, a
      datagram held by the :class:`~qbb.q3p.faults.FaultInjector`), then runs due timers --
      after reading, without waiting, whatever the wire already holds: when this process
      was descheduled, the ACKs that arrived meanwhile must be seen before a
      retransmission timer decides that frames were lost -- collects
      ``datagrams_to_send(now)``, passes them through the fault injector, puts them
      on the wire and hands the endpoint's events up (a trio memory channel, a callable, or
      nowhere, counted).

    Upper layers queue messages with :meth:`LinkDriver.send_nowait` (``False``: the
    endpoint's queue is full) or :meth:`LinkDriver.send` (waits for room); both wake the
    pump.  No exception from the wire escapes: socket errors, a closed channel and any
    exception the endpoint raises on input are counted in ``LinkDriver.counters`` and the
    loop goes on.  Cancelling the enclosing scope stops both tasks cleanly.

    Time: ``clock()`` (default :func:`trio.current_time`, so trio's ``MockClock`` gives
    virtual time) is the endpoint's ``now``.  Two processes whose emulated QKD devices must
    agree pass a shared wall-clock epoch instead (``clock=lambda: time.time() - epoch``);
    deadlines are converted to trio time on the fly.

:class:`LoopbackPair` is the trio-free counterpart for tests: two endpoints joined by an
in-memory wire with a fixed latency and optional fault injectors, run in virtual time as a
discrete-event simulation.
"""

from __future__ import annotations

import errno
import heapq
import logging
import socket
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

import trio

from qbb.q3p.faults import FaultInjector

log = logging.getLogger(__name__)


class Endpoint(Protocol):
    """What a driver needs from a Q3P endpoint (the fixed interface of the Q3P work)."""

    def start(self, now: float) -> None: ...
    def receive_datagram(self, data: bytes, now: float) -> None: ...
    def send(self, payload: bytes, now: float, *, priority: int = 0, channel: int = 0,
             encrypt: bool = False) -> bool: ...
    def datagrams_to_send(self, now: float) -> list[bytes]: ...
    def handle_timer(self, now: float) -> None: ...
    def next_timer(self) -> float | None: ...
    def events(self) -> list[Any]: ...
    def advance_keys(self, now: float) -> None: ...


EventSink = trio.MemorySendChannel | Callable[[Any], None] | None


class LinkDriver:
    """Pumps one endpoint's datagrams, timers, key refills and events (see module doc)."""

    def __init__(self, endpoint: Endpoint, *, events: EventSink = None,
                 faults: FaultInjector | None = None, clock: Callable[[], float] | None = None,
                 key_interval: float | None = 0.01, start: bool = True, batch: int = 64
                 ) -> None:
        self.endpoint = endpoint
        self.faults = faults
        self.counters: Counter[str] = Counter()
        self._sink = events
        self._clock = clock or trio.current_time
        self._key_interval = key_interval
        self._start = start
        self._batch = batch
        self._next_key: float | None = None
        self._wakeup = trio.Event()
        self._progress = trio.Event()
        self._transmit: Callable[[bytes], bool] | None = None
        self._writable: Callable[[], Any] | None = None
        self._drain: Callable[[], int] | None = None  # reads what the wire holds, no waiting
        self._backlog: deque[bytes] = deque()  # datagrams the socket had no room for

    def now(self) -> float:
        return self._clock()

    # -- upper layer ----------------------------------------------------------------------

    def send_nowait(self, payload: bytes, *, priority: int = 0, channel: int = 0,
                    encrypt: bool = False) -> bool:
        """Queue ``payload``; ``False`` when the endpoint's send queue is full."""
        accepted = self.endpoint.send(payload, self.now(), priority=priority, channel=channel,
                                      encrypt=encrypt)
        if accepted:
            self.wake()
        return accepted

    async def send(self, payload: bytes, *, priority: int = 0, channel: int = 0,
                   encrypt: bool = False) -> None:
        """Queue ``payload``, waiting for room while the send queue is full.

        A cancel point always, a schedule point only when it has to wait: a burst of sends
        fills the endpoint's queue before the pump runs, so frames leave in batches."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self.send_nowait(payload, priority=priority, channel=channel,
                                   encrypt=encrypt):
            await self._progress.wait()

    def wake(self) -> None:
        """Make the pump look for work now."""
        self._wakeup.set()

    # -- transports -----------------------------------------------------------------------

    async def run_memory(self, send_channel: trio.MemorySendChannel,
                         receive_channel: trio.MemoryReceiveChannel,
                         *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run over trio memory channels carrying whole datagrams (``bytes``)."""
        self._transmit = lambda datagram: self._memory_send(send_channel, datagram)
        self._drain = lambda: self._memory_drain(receive_channel)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._memory_receiver, receive_channel)
            await nursery.start(self._pump)
            task_status.started(self)

    async def run_udp(self, sock: socket.socket, peer: tuple[str, int] | None = None,
                      *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run over a bound stdlib UDP socket; ``peer`` is the address datagrams go to
        (default: the connected address) and the only one accepted."""
        sock.setblocking(False)
        peer = peer or sock.getpeername()
        peer = (socket.gethostbyname(peer[0]), peer[1])
        self._transmit = lambda datagram: self._udp_send(sock, peer, datagram)
        self._writable = lambda: trio.lowlevel.wait_writable(sock)
        self._drain = lambda: self._udp_drain(sock, peer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._udp_receiver, sock, peer)
            await nursery.start(self._pump)
            task_status.started(self)

    def _memory_send(self, channel: trio.MemorySendChannel, datagram: bytes) -> bool:
        try:
            channel.send_nowait(datagram)
        except trio.WouldBlock:
            self.counters["wire_full"] += 1  # a full wire drops, as a real one would
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.counters["wire_closed"] += 1
        return True

    async def _memory_receiver(self, channel: trio.MemoryReceiveChannel) -> None:
        try:
            async for datagram in channel:
                self._input(datagram)
                self._memory_drain(channel)
                self.wake()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        self.counters["wire_eof"] += 1
        await trio.sleep_forever()  # the pump keeps the endpoint's timers running

    def _memory_drain(self, channel: trio.MemoryReceiveChannel) -> int:
        """Up to ``batch`` datagrams already in the channel; how many."""
        for count in range(self._batch):
            try:
                self._input(channel.receive_nowait())
            except trio.WouldBlock:
                return count
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.EndOfChannel):
                return count
        return self._batch

    def _udp_send(self, sock: socket.socket, peer: tuple[str, int], datagram: bytes) -> bool:
        try:
            sock.sendto(datagram, peer)
        except BlockingIOError:
            self.counters["send_would_block"] += 1
            return False
        except OSError as error:
            self.counters[f"send_error.{_errname(error)}"] += 1
        return True

    async def _udp_receiver(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            self._udp_drain(sock, peer)
            self.wake()

    def _udp_drain(self, sock: socket.socket, peer: tuple[str, int]) -> int:
        """Up to ``batch`` datagrams already in the socket buffer; how many were read."""
        for count in range(self._batch):
            try:
                datagram, source = sock.recvfrom(1 << 16)
            except BlockingIOError:
                return count
            except OSError as error:  # e.g. ECONNREFUSED from an ICMP error
                self.counters[f"recv_error.{_errname(error)}"] += 1
                continue
            if source[:2] != peer:
                self.counters["foreign_source"] += 1
                continue
            self._input(datagram)
        return self._batch

    def _input(self, datagram: bytes) -> None:
        self.counters["wire_in"] += 1
        try:
            self.endpoint.receive_datagram(datagram, self.now())
        except Exception:  # the endpoint promises not to raise; never let the wire kill us
            self.counters["endpoint_error"] += 1
            log.exception("endpoint raised on an incoming datagram (dropped)")

    # -- the pump -------------------------------------------------------------------------

    async def _pump(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        now = self.now()
        if self._start:
            self.endpoint.start(now)
        if self._key_interval is not None:
            self.endpoint.advance_keys(now)
            self._next_key = now + self._key_interval
        task_status.started()
        while True:
            busy = await self._step()
            if not busy and self._trio_deadline() <= trio.current_time():
                self.counters["idle_timer"] += 1  # a due timer that did nothing: don't spin
                await trio.sleep(0.001)
            if self._backlog:
                with trio.move_on_at(self._trio_deadline()):
                    await self._writable()
                continue
            with trio.move_on_at(self._trio_deadline()):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    async def _step(self) -> bool:
        now = self.now()
        endpoint = self.endpoint
        if self._next_key is not None and now >= self._next_key:
            endpoint.advance_keys(now)
            self._next_key = max(self._next_key + self._key_interval, now)
        timer = endpoint.next_timer()
        if timer is not None and now >= timer:
            if self._drain is not None and self._drain():
                self.counters["drained_before_timer"] += 1
                now = self.now()
            endpoint.handle_timer(now)
        datagrams = endpoint.datagrams_to_send(now)
        if self.faults is not None:
            datagrams = self.faults.outgoing(datagrams, now)
        self._backlog.extend(datagrams)
        self._flush()
        if datagrams:
            self._progress.set()
            self._progress = trio.Event()
        events = endpoint.events()
        await self._deliver(events)
        return bool(datagrams or events)

    def _flush(self) -> None:
        backlog, transmit = self._backlog, self._transmit
        while backlog:
            if not transmit(backlog[0]):
                return  # no room in the socket buffer: the pump waits until writable
            backlog.popleft()
            self.counters["wire_out"] += 1

    async def _deliver(self, events: list[Any]) -> None:
        sink = self._sink
        for event in events:
            if sink is None:
                self.counters["events_unclaimed"] += 1
            elif isinstance(sink, trio.MemorySendChannel):
                try:
                    await sink.send(event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.counters["events_unclaimed"] += 1
            else:
                sink(event)
        if events:  # draining events may open the receive window: look for an ACK to send
            self._progress.set()
            self._progress = trio.Event()
            self.wake()

    def _trio_deadline(self) -> float:
        candidates = [self.endpoint.next_timer(), self._next_key,
                      self.faults.next_release() if self.faults is not None else None]
        due = min((t for t in candidates if t is not None), default=None)
        if due is None:
            return float("inf")
        return trio.current_time() + max(0.0, due - self.now())


def _errname(error: OSError) -> str:
    return errno.errorcode.get(error.errno, str(error.errno))


async def run_memory(endpoint: Endpoint, send_channel: trio.MemorySendChannel,
                     receive_channel: trio.MemoryReceiveChannel, *,
                     task_status=trio.TASK_STATUS_IGNORED, **options: Any) -> None:
    """Drive ``endpoint`` over memory channels; ``nursery.start`` returns the driver."""
    driver = LinkDriver(endpoint, **options)
    await driver.run_memory(send_channel, receive_channel, task_status=task_status)


async def run_udp(endpoint: Endpoint, sock: socket.socket, peer: tuple[str, int] | None = None,
                  *, task_status=trio.TASK_STATUS_IGNORED, **options: Any) -> None:
    """Drive ``endpoint`` over a UDP socket; ``nursery.start`` returns the driver."""
    driver = LinkDriver(endpoint, **options)
    await driver.run_udp(sock, peer, task_status=task_status)


def memory_wire(capacity: int = 1024) -> tuple[tuple, tuple]:
    """Two ``(send_channel, receive_channel)`` pairs, one per end, joined crosswise."""
    a_to_b_send, a_to_b_recv = trio.open_memory_channel(capacity)
    b_to_a_send, b_to_a_recv = trio.open_memory_channel(capacity)
    return (a_to_b_send, b_to_a_recv), (b_to_a_send, a_to_b_recv)


class LoopbackPair:
    """Two endpoints on a simulated wire, in virtual time, without trio (for tests)."""

    def __init__(self, a: Endpoint, b: Endpoint, *, latency: float = 0.001,
                 faults: tuple[FaultInjector | None, FaultInjector | None] = (None, None),
                 key_interval: float = 0.01, now: float = 0.0) -> None:
        self.ends = (a, b)
        self.faults = faults
        self.latency = latency
        self.key_interval = key_interval
        self.now = now
        self.events: tuple[list, list] = ([], [])
        self.delivered = [0, 0]
        self._wire: list[tuple[float, int, int, bytes]] = []  # (arrival, seq, to, datagram)
        self._seq = 0
        self._next_key = now

    def start(self) -> None:
        for end in self.ends:
            end.start(self.now)

    def run_until(self, until: float, predicate: Callable[[], bool] | None = None,
                  max_steps: int = 1_000_000) -> bool:
        """Simulate until ``predicate()`` holds (True) or virtual time reaches ``until``."""
        for _ in range(max_steps):
            self._settle()
            if predicate is not None and predicate():
                return True
            due = self._next_event()
            if due is None or due > until:
                self.now = max(self.now, until)
                self._settle()
                return predicate is not None and predicate()
            self.now = max(self.now, due)
        raise RuntimeError(f"no quiescence after {max_steps} steps at t={self.now}")

    def _settle(self) -> None:
        """Process everything due at ``self.now`` until nothing changes."""
        if self.now >= self._next_key:
            for end in self.ends:
                end.advance_keys(self.now)
            self._next_key = self.now + self.key_interval
        busy = True
        while busy:
            busy = False
            for index, end in enumerate(self.ends):
                timer = end.next_timer()
                if timer is not None and timer <= self.now:
                    end.handle_timer(self.now)
                out = end.datagrams_to_send(self.now)
                injector = self.faults[index]
                if injector is not None:
                    out = injector.outgoing(out, self.now) + injector.release(self.now)
                for datagram in out:
                    self._seq += 1
                    heapq.heappush(self._wire, (self.now + self.latency, self._seq,
                                                1 - index, datagram))
                self.events[index].extend(end.events())
                busy = busy or bool(out)
            while self._wire and self._wire[0][0] <= self.now:
                _, _, to, datagram = heapq.heappop(self._wire)
                self.ends[to].receive_datagram(datagram, self.now)
                self.delivered[to] += 1
                busy = True

    def _next_event(self) -> float | None:
        times = [self._next_key]
        times += [end.next_timer() for end in self.ends]
        times += [f.next_release() for f in self.faults if f is not None]
        if self._wire:
            times.append(self._wire[0][0])
        later = [t for t in times if t is not None]
        return max(min(later), self.now) if later else None


__all__ = ["Endpoint", "LinkDriver", "LoopbackPair", "memory_wire", "run_memory", "run_udp"]
