"""A QKDTL connection: one key stream between two nodes, sans-IO (SECOQC seed 002 §3.3-3.4).

The initiator's node draws fresh random session keys and sends them, numbered 0, 1, 2,
..., in KEY segments to the responder's node, reliably and under congestion control.
Consumption is synchronised (§3.3): the responder releases a key to its application as
soon as it holds it in order; the initiator releases a key only once the responder has
acknowledged it.  Both applications therefore see identical keys with identical indices
in the same order, and a key handed out at one end always exists at the other.

Generation is demand-bounded: keys are drawn only while the token bucket (λ, σ of the
connect request), the congestion window, the responder's advertised window (free room in
its key buffer) and the initiator's own buffer (released + in flight <= ``buffer_bits``)
allow.  When nobody takes keys both buffers fill and generation stops.

Connection management is TCP's (RFC 793): a three-way handshake whose SYN carries the
:class:`~qbb.transport.packet.ConnectRequest`, FIN handshakes, RST, random ISNs and byte
sequence numbers with 32-bit wraparound.  Every state change goes through the table in
:mod:`qbb.transport.fsm`.  A key stream has no half-close: a FIN from the peer is answered
with our own FIN at once.  The sending half (:mod:`qbb.transport.conn_send`) keeps
retransmission, RTT (:mod:`qbb.transport.rtt`) and congestion window
(:mod:`qbb.transport.congestion`); the receiving half (:mod:`qbb.transport.conn_recv`)
keeps reassembly, the key buffer and the window.  Timers (connect, retransmission,
persist, keepalive, idle, TIME-WAIT, token bucket) are read with :meth:`next_timer` and
fired with :meth:`handle_timer`; nothing here reads a clock.

Driver loop: after any input (``receive_segment``, ``handle_timer``, a command,
``take_keys``) call :meth:`segments_to_send` and :meth:`events`, then sleep until
:meth:`next_timer`.  ``docs/transport.md`` has the whole story.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections import Counter
from collections.abc import Callable

from qbb.errors import QbbError
from qbb.transport.bucket import TokenBucket
from qbb.transport.conn_config import (Closed, ConnectionConfig, Endpoint, Established,
                                       KeysAvailable, Reset, Role)
from qbb.transport.conn_input import SYNCHRONIZED, SegmentInput
from qbb.transport.conn_recv import ReceiveHalf
from qbb.transport.conn_send import Outstanding, SendHalf
from qbb.transport.fsm import Event, State, transition
from qbb.transport.packet import (ConnectRequest, KeyDelivery, Segment, SegmentFlags,
                                  decode_connect_request, encode_connect_request)
from qbb.transport.recovery import encode_dsack
from qbb.transport.rtt import seq_add

__all__ = ["Closed", "Connection", "ConnectionConfig", "Endpoint", "Established",
           "KeysAvailable", "Reset", "Role", "State", "derive_ksid"]

F = SegmentFlags
_MAX_DUP_ACKS_PER_DRAIN = 3


def _endpoint_bytes(endpoint: Endpoint) -> bytes:
    address = endpoint.address.encode("utf-8")
    return len(address).to_bytes(1, "big") + address + endpoint.port.to_bytes(2, "big")


def derive_ksid(initiator: Endpoint, responder: Endpoint, initiator_isn: int) -> str:
    """The key stream id both ends compute: a UUID from SHA-256 over the 4-tuple and ISN."""
    digest = hashlib.sha256(b"qbb/ksid/v1" + _endpoint_bytes(initiator)
                            + _endpoint_bytes(responder) + initiator_isn.to_bytes(4, "big"))
    return str(uuid.UUID(bytes=digest.digest()[:16], version=4))


class Connection(SegmentInput):
    """One end of a QKDTL connection (see the module docstring)."""

    def __init__(self, local: Endpoint, remote: Endpoint, role: Role, config: ConnectionConfig,
                 *, request: ConnectRequest | None = None, isn: int | None = None,
                 randbytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.local, self.remote, self.role, self.config = local, remote, role, config
        self.request = request
        self._randbytes = randbytes
        iss = isn if isn is not None else int.from_bytes(randbytes(4), "big")
        self.iss = iss & 0xFFFF_FFFF
        self._state = State.CLOSED
        self.counters: Counter[str] = Counter()
        self._events: list = []
        self._raw: list[Segment] = []  # RSTs: sent once, never retransmitted
        self.send = SendHalf(self.iss, config)
        self.recv = ReceiveHalf(config)
        self._connect_due: float | None = None
        self._time_wait_due: float | None = None
        self._last_heard: float | None = None
        self._last_probe: float | None = None
        self._ksid: str | None = None
        self.reset_payload = b""  # payload of the RST that refused our SYN
        if role is Role.INITIATOR:
            self._ksid = derive_ksid(local, remote, self.iss)

    # --- properties ------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def ksid(self) -> str | None:
        """Key stream id; known at the initiator from the start, at the responder once the
        SYN is accepted (None before)."""
        return self._ksid

    def keys_available(self) -> int:
        return len(self.recv.keys)

    def take_keys(self, n: int = 1) -> list[KeyDelivery]:
        """Up to ``n`` released keys, in order (``key_id`` is the index in the stream)."""
        keys = self.recv.keys.take(max(0, n))
        if keys and self.role is Role.RESPONDER and self._state in SYNCHRONIZED \
                and self.recv.window_update_due():
            self.recv.acks_owed = max(self.recv.acks_owed, 1)
        return keys

    def events(self) -> list:
        out, self._events = self._events, []
        return out

    # --- commands --------------------------------------------------------------------

    def open(self, now: float) -> None:
        """Initiator: send the SYN carrying ``request``."""
        if self.role is not Role.INITIATOR:
            raise QbbError("open() is for the initiator; a responder uses accept_syn()")
        body = encode_connect_request(self.request) if self.request is not None else b""
        self._fire(Event.OPEN)
        self._setup_bucket(now)
        self.send.push(F.SYN, body, 1)
        self._connect_due = now + self.config.connect_timeout

    def accept_syn(self, segment: Segment, now: float) -> None:
        """Responder: take the initiator's SYN (DecodeError if its request is malformed)."""
        if self.role is not Role.RESPONDER:
            raise QbbError("accept_syn() is for the responder")
        if not segment.flags & F.SYN or segment.flags & (F.ACK | F.RST | F.KEY):
            raise QbbError(f"accept_syn() needs a bare SYN, got flags {segment.flags!r}")
        request = decode_connect_request(segment.payload) if segment.payload else None
        self._fire(Event.RECV_SYN)
        self.request = request
        self.recv.start(segment.seq)
        self.send.update_window(segment.window)
        self._ksid = derive_ksid(self.remote, self.local, segment.seq)
        self.send.push(F.SYN, b"", 1)
        self._connect_due = now + self.config.connect_timeout
        self._last_heard = now

    def reject(self, now: float, payload: bytes = b"") -> None:
        """Responder: refuse the connection with an RST (``payload``: an optional reason
        code for the layer above; the initiator keeps it as ``reset_payload``)."""
        if self._state is not State.SYN_RECEIVED:
            raise QbbError(f"reject() needs state SYN-RECEIVED, not {self._state.value}")
        self.send.tx.clear()
        self._send_rst(bytes(payload))
        self._terminate(Event.ABORT, Reset("rejected"))

    def close(self, now: float) -> None:
        """Graceful close: FIN after everything already sent; no new keys are drawn."""
        if self._state is State.SYN_SENT:
            self._send_rst(b"")
            self._terminate(Event.CLOSE, Closed("closed before established"))
        elif self._state in (State.SYN_RECEIVED, State.ESTABLISHED, State.CLOSE_WAIT):
            self._fire(Event.CLOSE)
            self.send.push(F.FIN, b"", 1)

    def abort(self, now: float, reason: str) -> None:
        """Abort with RST; the Reset event carries ``reason``."""
        if self._state is State.CLOSED:
            return
        if self._state is State.TIME_WAIT:  # the stream already ended (Closed was reported)
            self._fire(Event.ABORT)
            self._time_wait_due = None
            return
        self._send_rst(b"")
        self._terminate(Event.ABORT, Reset(reason))

    def congestion_signal(self, now: float, kind: str) -> None:
        """``"ece"`` (an ACK echoed a CE mark) or ``"source_quench"`` (ICMP type 4 from a
        key-starved forwarder): halve the window, at most once per round trip."""
        if kind not in ("ece", "source_quench"):
            raise ValueError(f"unknown congestion signal {kind!r}")
        self.counters[kind] += 1
        if self.role is Role.INITIATOR and self._state in SYNCHRONIZED:
            self.send.on_signal(kind, now)

    def unreachable(self, now: float, reason: str) -> None:
        """ICMP destination unreachable for this connection: fatal while connecting."""
        self.counters["unreachable"] += 1
        if self._state is State.SYN_SENT:
            self._terminate(Event.ABORT, Reset(reason))

    # --- segments out ------------------------------------------------------------------

    def segments_to_send(self, now: float) -> list[Segment]:
        """Everything to transmit now: RSTs, new and retransmitted segments, owed ACKs."""
        out, self._raw = self._raw, []
        if self.role is Role.INITIATOR and self._state is State.ESTABLISHED:
            self.send.generate(now, self.recv.keys.bits, self._randbytes)
        entries = self.send.drain(now)
        out.extend(self._segment(entry) for entry in entries)
        if self.recv.synchronized and self._state is not State.CLOSED:
            acked = len(entries) if self._state is not State.SYN_SENT else 0
            bare = min(self.recv.acks_owed, _MAX_DUP_ACKS_PER_DRAIN) - acked
            blocks = self.recv.dsack[:_MAX_DUP_ACKS_PER_DRAIN]
            out.extend(self._bare_ack(self.send.nxt, encode_dsack(*block)) for block in blocks)
            out.extend(self._bare_ack(self.send.nxt) for _ in range(bare - len(blocks)))
        self.recv.acks_owed = 0
        self.recv.dsack.clear()
        self.counters["segments_sent"] += len(out)
        return out

    def _flags_ack(self) -> tuple[SegmentFlags, int, int]:
        """ACK flags, ack number and window for a segment sent now."""
        if not self.recv.synchronized:
            return F(0), 0, self.recv.window_field()
        flags = F.ACK | (F.ECE if self.recv.ece_echo else F(0))
        return flags, self.recv.nxt, self.recv.advertised()

    def _segment(self, entry: Outstanding) -> Segment:
        flags, ack, window = self._flags_ack()
        flags |= entry.flags
        if entry.flags & F.KEY and self.send.cwr_pending and entry.transmissions == 1:
            flags |= F.CWR
            self.send.cwr_pending = False
        return Segment(self.local.port, self.remote.port, entry.seq, ack, flags, window,
                       entry.payload)

    def _bare_ack(self, seq: int, payload: bytes = b"") -> Segment:
        """An ACK without data; ``payload``: a D-SACK block (:mod:`~qbb.transport.recovery`)."""
        flags, ack, window = self._flags_ack()
        return Segment(self.local.port, self.remote.port, seq, ack, flags, window, payload)

    def _send_rst(self, payload: bytes) -> None:
        if self.recv.synchronized:
            seg = Segment(self.local.port, self.remote.port, self.send.nxt, self.recv.nxt,
                          F.RST | F.ACK, 0, payload)
        else:
            seg = Segment(self.local.port, self.remote.port, self.send.nxt, 0, F.RST, 0, payload)
        self._raw.append(seg)

    # --- timers ------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` wants to run next (None: nothing pending)."""
        if self._state is State.CLOSED:
            return None
        if self._state is State.TIME_WAIT:
            return self._time_wait_due
        times = [self._connect_due, self.send.rtx_due, self.send.persist_due,
                 self.send.bucket_due, self.send.hole_due, self._idle_due(),
                 self._keepalive_due()]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def _idle_due(self) -> float | None:
        if self._state not in SYNCHRONIZED or self._last_heard is None:
            return None
        return self._last_heard + self.config.idle_timeout

    def _keepalive_due(self) -> float | None:
        if self._state not in SYNCHRONIZED or self.send.queue or self._last_heard is None:
            return None
        last = max(self._last_heard, self._last_probe or self._last_heard)
        return last + self.config.keepalive_interval

    def handle_timer(self, now: float) -> None:
        """Fire every timer that is due at ``now``."""
        if self._state is State.TIME_WAIT:
            if self._time_wait_due is not None and now >= self._time_wait_due:
                self._fire(Event.TIME_WAIT_EXPIRED)
                self._time_wait_due = None
            return
        if self._state is State.CLOSED:
            return
        if self._connect_due is not None and now >= self._connect_due:
            self._terminate(Event.TIMEOUT, Reset("timeout"))
        elif (due := self._idle_due()) is not None and now >= due:
            self._terminate(Event.TIMEOUT, Reset("idle timeout"))
        else:
            self._handle_send_timers(now)

    def _handle_send_timers(self, now: float) -> None:
        send = self.send
        if send.rtx_due is not None and now >= send.rtx_due and not send.on_rto(now):
            self._terminate(Event.TIMEOUT, Reset("timeout"))
            return
        if send.hole_due is not None and now >= send.hole_due:
            send.on_hole_timer(now)
        if send.persist_due is not None and now >= send.persist_due:
            self._probe(now)
            send.probe_sent(now)
        elif (due := self._keepalive_due()) is not None and now >= due:
            self._probe(now)
        if send.bucket_due is not None and now >= send.bucket_due:
            send.bucket_due = None  # segments_to_send generates

    def _probe(self, now: float) -> None:
        """An ACK one below ``nxt``: old to the peer, which must answer it (RFC 1122)."""
        self._raw.append(self._bare_ack(seq_add(self.send.nxt, -1)))
        self._last_probe = now
        self.counters["probes"] += 1

    # --- state changes -----------------------------------------------------------------

    def _fire(self, event: Event) -> None:
        self._state = transition(self._state, event)

    def _established(self) -> None:
        self._connect_due = None
        self._events.append(Established())

    def _enter_time_wait(self, now: float) -> None:
        self._time_wait_due = now + self.config.time_wait
        self.send.rtx_due = None
        self._finish(Closed("closed"))

    def _terminate(self, event: Event, final: Closed | Reset) -> None:
        self._fire(event)
        self.send.tx.clear()
        self._finish(final)

    def _finish(self, final: Closed | Reset) -> None:
        self._connect_due = None
        for name in ("rtx_due", "persist_due", "bucket_due", "hole_due"):
            setattr(self.send, name, None)
        self._events.append(final)
        self.counters["reset" if isinstance(final, Reset) else "closed"] += 1

    def _setup_bucket(self, now: float) -> None:
        request = self.request
        if request is None or request.rate <= 0:
            return
        bits = self.config.key_bits
        burst = request.burst or bits * self.config.segment_keys
        self.send.bucket = TokenBucket(request.rate, max(burst, bits), now)

    # --- status ------------------------------------------------------------------------

    def status(self) -> dict:
        """A JSON-ready snapshot of the connection."""
        send, recv, cc = self.send, self.recv, self.send.cc
        return {
            "ksid": self._ksid, "role": self.role.value, "state": self._state.value,
            "local": f"{self.local.address}:{self.local.port}",
            "remote": f"{self.remote.address}:{self.remote.port}",
            "cwnd": round(cc.cwnd, 3),
            "ssthresh": None if cc.ssthresh == float("inf") else round(cc.ssthresh, 3),
            "srtt": send.rtt.srtt, "rto": send.rtt.rto,
            "peer_window_bytes": send.peer_window, "in_flight_bytes": send.bytes_in_flight,
            **send.stats, "keys_released": recv.keys.released, "keys_taken": recv.keys.taken,
            "keys_available": len(recv.keys), "reductions": dict(cc.reductions),
            "undone": cc.undone, "dupthresh": send.recovery.dupthresh, **send.recovery.stats,
            **recv.stats, "counters": dict(self.counters),
        }
