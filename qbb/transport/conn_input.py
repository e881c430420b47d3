"""Segment input of a QKDTL connection: the RFC 793 §3.9 "SEGMENT ARRIVES" processing.

A mixin of :class:`qbb.transport.connection.Connection` (kept apart to keep modules short;
it uses the connection's halves ``send`` / ``recv`` and its state-change helpers).  The
order of checks follows RFC 793 §3.9:

1. SYN-SENT: an RST is acceptable only if it acknowledges our SYN (-> Reset "refused",
   the RST payload kept as ``reset_payload``); a SYN+ACK that acknowledges our SYN
   completes the handshake; anything else is dropped.
2. Otherwise an RST is acceptable when its sequence number lies in the receive window
   (RFC 793; TIME-WAIT ignores RSTs, RFC 1337) -> Reset "reset by peer".
3. A SYN in a synchronised state is a retransmission of the peer's SYN (our SYN+ACK was
   lost: send it again) or SYN+ACK (our ACK was lost: ACK again).
4. A segment without ACK is dropped.  An ACK of data never sent is answered with an ACK
   and the segment dropped; an old ACK is ignored; an ACK in ``(una, nxt]`` releases the
   acknowledged keys at the initiator and completes the SYN or FIN handshake it closes.
   A repeated ACK with no data and the same window is a duplicate ACK (RFC 5681 §2).
   An 8-byte payload on an ACK without KEY is a D-SACK block: the peer received that
   range twice (:mod:`qbb.transport.recovery`).
   ECE on an ACK asks the initiator to halve its window (RFC 3168 §6.1.2).
5. KEY payload and FIN: in order -> processed (keys released at the responder, FIN moves
   the state machine); ahead -> held; behind -> duplicate; beyond the free buffer ->
   dropped.  Each owes an ACK.  A bare segment older than ``nxt`` is a probe or
   keepalive and is answered.
"""

from __future__ import annotations

from collections.abc import Sequence

from qbb.transport.conn_config import Closed, KeysAvailable, Reset, Role
from qbb.transport.conn_recv import RawKey, unpack_raw_keys
from qbb.transport.conn_send import Outstanding
from qbb.transport.fsm import Event, State
from qbb.transport.packet import Segment, SegmentFlags
from qbb.transport.recovery import DSACK, decode_dsack
from qbb.transport.rtt import seq_add, seq_diff

__all__ = ["SegmentInput", "SYNCHRONIZED"]

F = SegmentFlags
SYNCHRONIZED = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2,
                          State.CLOSING, State.CLOSE_WAIT, State.LAST_ACK})
#: States in which the peer's FIN was received: nothing may follow it.
_FIN_RECEIVED = frozenset({State.CLOSING, State.CLOSE_WAIT, State.LAST_ACK, State.TIME_WAIT,
                           State.CLOSED})


class SegmentInput:
    """``receive_segment`` and its helpers (mixed into Connection)."""

    def receive_segment(self, segment: Segment, now: float, *,
                        congestion_mark: bool = False) -> None:
        """Process one segment of this connection (ports already demultiplexed)."""
        self.counters["segments_received"] += 1
        if self._state in (State.CLOSED,) or (segment.src_port, segment.dst_port) != \
                (self.remote.port, self.local.port):
            self.counters["dropped_not_ours"] += 1
            return
        self._last_heard = now
        if self._state is State.SYN_SENT:
            self._receive_syn_sent(segment, now)
        elif segment.flags & F.RST:
            self._receive_rst(segment)
        elif segment.flags & F.SYN:
            self._receive_old_syn(segment)
        elif not segment.flags & F.ACK:
            self.counters["dropped_no_ack"] += 1
        elif self._receive_ack(segment, now):
            self._receive_payload(segment, now, congestion_mark)

    def _receive_syn_sent(self, segment: Segment, now: float) -> None:
        acks_syn = bool(segment.flags & F.ACK) and segment.ack == seq_add(self.iss, 1)
        if segment.flags & F.RST:
            if acks_syn:
                self.reset_payload = segment.payload
                self._terminate(Event.RECV_RST, Reset("refused"))
            return
        if not (acks_syn and segment.flags & F.SYN) or segment.flags & F.KEY:
            self.counters["dropped_handshake"] += 1
            return
        self.recv.start(segment.seq)
        self.send.update_window(segment.window)
        self.send.on_new_ack(segment.ack, now)
        self._fire(Event.RECV_SYN_ACK)
        self._established()
        self.recv.acks_owed = max(self.recv.acks_owed, 1)

    def _receive_rst(self, segment: Segment) -> None:
        if self._state is State.TIME_WAIT:  # RFC 1337: TIME-WAIT ignores RST
            self.counters["dropped_rst"] += 1
            return
        ahead = seq_diff(segment.seq, self.recv.nxt)
        if 0 <= ahead <= max(self.recv.free_bytes(), 1) or self._state is State.SYN_RECEIVED:
            self.reset_payload = segment.payload
            self._terminate(Event.RECV_RST, Reset("reset by peer"))
        else:
            self.counters["dropped_rst"] += 1

    def _receive_old_syn(self, segment: Segment) -> None:
        """A retransmitted SYN (our SYN+ACK was lost) or SYN+ACK (our ACK was lost)."""
        if segment.seq != self.recv.irs:
            self.counters["dropped_handshake"] += 1
        elif self._state is State.SYN_RECEIVED:
            self.send.retransmit_oldest()
        else:
            self.recv.acks_owed += 1

    def _receive_ack(self, segment: Segment, now: float) -> bool:
        """Apply the ACK field; False if the segment must be dropped."""
        send, ack = self.send, segment.ack
        if not send.ack_valid(ack):
            self.counters["dropped_bad_ack"] += 1
            self.recv.acks_owed += 1
            return False
        ahead = seq_diff(ack, send.una)
        if ahead >= 0:
            if ahead == 0 and not segment.payload and not segment.flags & F.FIN \
                    and segment.window == send.last_window_field:
                send.on_duplicate_ack(now)
            send.last_window_field = segment.window
            send.update_window(segment.window)
        if ahead > 0:
            self._acknowledged(send.on_new_ack(ack, now), now)
        if segment.flags & F.ECE and self.role is Role.INITIATOR and self._state in SYNCHRONIZED:
            self.counters["ece"] += 1
            self.send.on_signal("ece", now, ack)
        if len(segment.payload) == DSACK.size and not segment.flags & (F.KEY | F.FIN):
            self.counters["dsack_received"] += 1
            self.send.on_dsack(decode_dsack(segment.payload)[0])
        if self._state is State.SYN_RECEIVED:  # it did not acknowledge our SYN+ACK
            self.counters["dropped_handshake"] += 1
            return False
        return self._state is not State.CLOSED

    def _acknowledged(self, entries: list[Outstanding], now: float) -> None:
        """Release acknowledged keys (initiator) and react to our SYN / FIN being acked."""
        for entry in entries:
            if entry.flags & F.KEY and self.role is Role.INITIATOR:
                self._release(entry.keys, now)
            elif entry.flags & F.SYN and self._state is State.SYN_RECEIVED:
                self._fire(Event.RECV_ACK)
                self._established()
            elif entry.flags & F.FIN:
                self._fire(Event.RECV_ACK)
                self._after_fin_acked(now)

    def _after_fin_acked(self, now: float) -> None:
        if self._state is State.TIME_WAIT:
            self._enter_time_wait(now)
        elif self._state is State.CLOSED:
            self._finish(Closed("closed"))

    def _receive_payload(self, segment: Segment, now: float, mark: bool) -> None:
        fin = bool(segment.flags & F.FIN)
        data = bool(segment.flags & F.KEY and segment.payload)
        if not data and not fin:
            if seq_diff(segment.seq, self.recv.nxt) < 0:
                self.recv.acks_owed += 1  # a probe or keepalive: answer it
            return
        if data and self.role is Role.INITIATOR:
            self.counters["dropped_protocol"] += 1
            return
        if segment.flags & F.CWR:
            self.recv.ece_echo = False
        if mark and data:
            self.recv.ece_echo = True
        verdict = self.recv.classify(segment, len(segment.payload) + fin)
        if verdict != "in_order" or self._state in _FIN_RECEIVED:
            self._not_in_order(segment, verdict, now)
            return
        while segment is not None and self._state not in _FIN_RECEIVED:
            self._in_order(segment, now)
            segment = self.recv.pop_held()
        if self._state in _FIN_RECEIVED:
            self.recv.held.clear()  # nothing can follow the peer's FIN
        self.recv.acks_owed = max(self.recv.acks_owed, 1)

    def _not_in_order(self, segment: Segment, verdict: str, now: float) -> None:
        self.recv.acks_owed += 1
        if verdict == "in_order" or (verdict == "held" and self._state in _FIN_RECEIVED):
            self.recv.held.pop(segment.seq, None)
            self.counters["dropped_after_fin"] += 1
        if verdict == "duplicate" and segment.flags & F.FIN and self._state is State.TIME_WAIT:
            self._fire(Event.RECV_FIN)  # the peer lost our last ACK: restart 2MSL
            self._time_wait_due = now + self.config.time_wait

    def _in_order(self, segment: Segment, now: float) -> None:
        if segment.payload and segment.flags & F.KEY:
            keys = self._checked_keys(segment.payload, now)
            if keys is None:
                return
            self.recv.advance(len(segment.payload))
            self._release(keys, now)
        if segment.flags & F.FIN:
            self.recv.advance(1)
            self._receive_fin(now)

    def _checked_keys(self, payload: bytes, now: float) -> list[RawKey] | None:
        keys = unpack_raw_keys(payload)
        if keys is None or keys[0][0] != self.recv.keys.next_id:
            self.abort(now, "protocol error: bad key sequence")
            return None
        return keys

    def _receive_fin(self, now: float) -> None:
        self._fire(Event.RECV_FIN)
        if self._state is State.CLOSE_WAIT:
            self.close(now)  # no half-close for a key stream
        elif self._state is State.TIME_WAIT:
            self._enter_time_wait(now)

    def _release(self, keys: Sequence[RawKey], now: float) -> None:
        if not self.recv.keys.release(keys):
            self.abort(now, "protocol error: key ids out of sequence")
            return
        if self._events and isinstance(self._events[-1], KeysAvailable):
            self._events[-1] = KeysAvailable(self._events[-1].count + len(keys))
        else:
            self._events.append(KeysAvailable(len(keys)))
