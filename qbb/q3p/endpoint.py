"""Sans-IO Q3P endpoint: one end of a QBB link (seed 002 §2.5, §3.1 Table II; ``docs/q3p.md``).

Inputs: :meth:`Q3PEndpoint.receive_datagram`, :meth:`~Q3PEndpoint.handle_timer`,
:meth:`~Q3PEndpoint.send`, :meth:`~Q3PEndpoint.advance_keys`; outputs:
:meth:`~Q3PEndpoint.datagrams_to_send`, :meth:`~Q3PEndpoint.events`,
:meth:`~Q3PEndpoint.next_timer`.  ``now`` is always an argument; nothing here reads a
clock or does I/O.  A driver (:mod:`qbb.q3p.driver`) calls ``datagrams_to_send`` after
every input and ``handle_timer`` at ``next_timer()``.

Per frame (:mod:`qbb.q3p.seal`): fresh key for a one-time Poly1305 tag on *every* frame,
and a one-time pad over the payload of DATA frames sent with ``encrypt=True``.  A
received frame is decoded, checked against the session key floor (below), its tag
verified, and only then acted upon.  Any bad frame is dropped and counted in
:attr:`Q3PEndpoint.counters` by reason; nothing from the wire raises.

Sessions.  Each endpoint instance draws a 64-bit session nonce.  Both ends send HANDSHAKE
(node id, link id, nonce, MTU, window, key positions, key ratio) until an authentic
HANDSHAKE_ACK whose *message number* echoes the low 32 bits of their nonce arrives
(:mod:`qbb.q3p.connection`).  A HANDSHAKE(_ACK) with a new peer nonce means the peer
restarted: message numbers of both directions go back to 0 and unacknowledged messages
are queued again from their first byte.  Frames of an older session are told apart by key
offsets, which only grow at the sender even across restarts: frames whose A-offset is
below the *peer floor* (the A-offset of the handshake frame that established the current
session) are stale and dropped before any key is touched.

Data (:mod:`qbb.q3p.arq`, :mod:`qbb.q3p.fragment`): per-channel FIFOs with priorities,
fragmentation at the agreed MTU, selective-repeat ARQ with cumulative + SACK acks, RFC 6298
RTO with probe-first timeout recovery and spurious-timeout detection (:mod:`qbb.q3p.rto`),
exactly-once in-order delivery; a retransmission keeps its message number and is sealed
with fresh key.  ACK bodies go through the ``struct`` fast path of :mod:`qbb.q3p.fastbody`.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
from typing import Any

from qbb.errors import DecodeError
from qbb.q3p.arq import MASK, ReceiveWindow, RttEstimator, SendWindow
from qbb.q3p.config import MIN_MTU, LinkConfig
from qbb.q3p.connection import Action, Event, State, transition
from qbb.q3p.device import DeviceGroup
from qbb.q3p.events import Delivered, KeyStarved, LinkDown, LinkUp
from qbb.q3p.fastbody import decode_control, encode_control
from qbb.q3p.fragment import Fragment, Reassembler, SendQueue
from qbb.q3p.keystore import KeyUnavailable, LinkKeyStore
from qbb.q3p.packet import (Q3P_HEADER_LEN, Q3P_TAG_LEN, Command, Handshake, Notice, Q3PFrame,
                            Reason, Sync, decode_frame)
from qbb.q3p.seal import SealError, decrypt_payload, seal_frame, verify_frame

CONTROL_PRIORITY = 7
SYNC_PERIOD = 4  # keepalive intervals between SYNCs when the decryption floor moved


class Q3PEndpoint:
    """One end of a Q3P link over an unreliable datagram channel."""

    def __init__(self, config: LinkConfig, store: LinkKeyStore,
                 devices: DeviceGroup | None = None, *, nonce: int | None = None) -> None:
        self.config, self.store, self.devices = config, store, devices
        self.nonce = nonce if nonce is not None else secrets.randbits(64) | 1
        self.counters: Counter[str] = Counter()
        self._state = State.DOWN
        self._events: list[Any] = []
        self._peer_nonce: int | None = None
        self._peer_floor = 0
        self._peer_mtu = config.mtu
        self._rtt = RttEstimator(config.rto_initial, config.rto_min, config.rto_max)
        self._queue = SendQueue(config.queue_messages, config.queue_bytes)
        self._reasm = Reassembler(config.max_message)
        self._parked: deque[tuple[bytes, float]] = deque()
        self._starved = False
        self._hs_next: float | None = None
        self._hs_acks: dict[int, None] = {}
        self._close_pending: Notice | None = None
        self._sync_ack = self._sync_due = False
        self._sync_last: float | None = None
        self._sync_floor = -1
        self._last_rx = self._last_tx = self._last_poll = 0.0
        self._new_session()
        self._handlers = {
            Command.DATA: self._on_data, Command.ACK: self._on_ack,
            Command.HANDSHAKE: self._on_handshake, Command.HANDSHAKE_ACK: self._on_handshake_ack,
            Command.SYNC: self._on_sync, Command.SYNC_ACK: self._on_sync,
            Command.KEEPALIVE: self._on_notice, Command.CLOSE: self._on_notice,
            Command.RESET: self._on_notice,
        }

    def _new_session(self) -> None:
        self._tx = SendWindow(self.config.window, self._rtt, probe_rto=self.config.rto_probe)
        self._rx = ReceiveWindow(self.config.window)
        self._reasm.clear()
        self._ack_count, self._ack_now, self._ack_deadline = 0, False, None
        self._undrained = 0
        self._advertised = self.config.window

    # -- public interface ----------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state.value

    def start(self, now: float) -> None:
        """Begin the handshake."""
        if self._state is State.DOWN:
            self._last_rx = self._last_tx = now
            self._apply(Event.START, now)
            self.advance_keys(now)

    def close(self, now: float, text: str = "") -> None:
        """Send CLOSE and stop (the endpoint can be started again)."""
        self._apply(Event.CLOSE, now, "closed locally", Notice(Reason.NORMAL, text[:200]))

    def send(self, payload: bytes, now: float, *, priority: int = 0, channel: int = 0,
             encrypt: bool = False) -> bool:
        """Queue one upper-layer message; ``False`` (nothing queued) when it cannot be."""
        try:
            if not (type(priority) is int and 0 <= priority <= 7  # noqa: E721
                    and type(channel) is int and 0 <= channel <= 255  # noqa: E721
                    and isinstance(payload, (bytes, bytearray, memoryview))
                    and len(payload) <= self.config.max_message):
                self.counters["send.invalid"] += 1
                return False
            if self._queue.push(channel, priority, bytes(payload), bool(encrypt)):
                return True
        except Exception:  # noqa: BLE001 - send raises nothing
            self.counters["internal_error"] += 1
            return False
        self.counters["send.queue_full"] += 1
        return False

    def receive_datagram(self, data: bytes, now: float) -> None:
        """One datagram from the peer; bad frames are dropped and counted."""
        try:
            self._poll(now)
            self._receive(data, now, now)
        except Exception:  # noqa: BLE001 - nothing from the wire may reach the driver
            self.counters["internal_error"] += 1

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Frames to put on the wire now: control first, then retransmissions, then data."""
        try:
            return self._output(now)
        except Exception:  # noqa: BLE001
            self.counters["internal_error"] += 1
            return []

    def handle_timer(self, now: float) -> None:
        try:
            self._timers(now)
        except Exception:  # noqa: BLE001
            self.counters["internal_error"] += 1

    def next_timer(self) -> float | None:
        """Absolute time at which :meth:`handle_timer` wants to run, if any."""
        if self._state is State.DOWN:
            return None
        times = []
        idle = self._starved  # retried at the next key poll (or advance_keys call)
        if self._state is State.HANDSHAKING and self._hs_next is not None and not idle:
            times.append(self._hs_next)
        if self._state is State.UP:
            times.append(self._last_rx + self.config.dead_interval)
            if not idle:
                times.append(self._last_tx + self.config.keepalive)
            deadline = self._tx.next_deadline()
            if deadline is not None:
                times.append(deadline)
            if self._ack_deadline is not None and not idle:
                times.append(self._ack_deadline)
        if self.devices is not None and (self._starved or self._parked):
            times.append(self._last_poll + self.config.key_poll)
        if self._parked:
            times.append(self._parked[0][1] + self.config.dead_interval)
        return min(times) if times else None

    def events(self) -> list[Any]:
        """Events since the last call (Delivered, LinkUp, LinkDown, KeyStarved)."""
        events, self._events = self._events, []
        self._undrained = 0
        if self._advertised < max(1, self.config.window // 2):
            self._ack_now = True  # window update
        return events

    def advance_keys(self, now: float) -> None:
        """Pull new key from the devices into the store; retry frames parked for key."""
        try:
            if self.devices is not None:
                position = self.devices.position
                data = self.devices.advance(now)
                if data:
                    self.store.ingest(data, position)
            self._last_poll = now
            parked, self._parked = self._parked, deque()
            for data, arrival in parked:
                self._receive(data, now, arrival)
        except Exception:  # noqa: BLE001
            self.counters["internal_error"] += 1

    def status(self) -> dict[str, Any]:
        positions = self.store.positions()
        return {
            "node_id": self.config.node_id, "peer_id": self.config.peer_id,
            "link_id": self.config.link_id, "state": self.state,
            "mtu": min(self.config.mtu, self._peer_mtu), "window": self.config.window,
            "peer_window": self._tx.peer_window, "in_flight": len(self._tx.inflight),
            "queued": len(self._queue), "snd_nxt": self._tx.nxt, "rcv_nxt": self._rx.nxt,
            "srtt": self._rtt.srtt, "rto": self._rtt.rto, "rto_floor": self._rtt.floor,
            "key_starved": self._starved,
            "enc_next": positions.enc_next, "enc_end": positions.enc_end,
            "dec_next": positions.dec_next, "dec_end": positions.dec_end,
            "parked": len(self._parked), "counters": dict(self.counters),
        }

    # -- connection management ------------------------------------------------------------

    def _apply(self, event: Event, now: float, reason: str = "",
               notice: Notice | None = None) -> None:
        self._state, actions = transition(self._state, event)
        for action in actions:
            if action is Action.SEND_HANDSHAKE:
                self._hs_next = now
            elif action is Action.LINK_UP:
                self._events.append(LinkUp(self.config.peer_id))
                self._hs_next, self._sync_due, self._last_rx = None, True, now
            elif action is Action.LINK_DOWN:
                self._events.append(LinkDown(self.config.peer_id, reason))
            elif action is Action.RESET_SESSION:
                self._reset_session()
            elif action is Action.SEND_CLOSE:
                self._close_pending = notice or Notice()

    def _reset_session(self) -> None:
        """Message numbers restart at 0; unacknowledged messages are sent again in full."""
        again = [entry.item.message for entry in self._tx.unacknowledged()]
        again += self._queue.partial()
        if again:
            self.counters["session.requeued_fragments"] += len(again)
        self._queue.requeue(again)
        self._new_session()

    def _handshake_body(self, frame: Q3PFrame, payload: bytes) -> Handshake | None:
        body = self._body(frame, payload)
        if body is None:
            return None
        if (body.node_id != self.config.peer_id or body.link_id != self.config.link_id
                or body.key_ratio != self.store.config.key_ratio or body.mtu < MIN_MTU):
            self.counters["handshake.mismatch"] += 1
            return None
        return body

    def _learn_peer(self, body: Handshake, frame: Q3PFrame, now: float) -> None:
        self.store.skip_enc_to(body.dec_next)
        if body.session_nonce == self._peer_nonce:
            return
        if self._peer_nonce is not None:
            self.counters["peer.restart"] += 1
        self._peer_nonce = body.session_nonce
        self._peer_floor = max(self._peer_floor, frame.a_offset)
        self._peer_mtu = body.mtu
        self.store.retire_dec_below(frame.a_offset)
        self._apply(Event.PEER_RESTART, now, "peer restarted")
        self._tx.peer_window = body.window

    # -- receiving --------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self.counters[reason] += 1

    def _receive(self, data: bytes, now: float, arrival: float) -> None:
        if self._state is State.DOWN:
            return self._drop("not_started")
        try:
            frame = decode_frame(data)
        except DecodeError:
            return self._drop("malformed")
        if frame.tag is None:
            if self.config.authenticate_all or frame.command != Command.DATA or frame.encrypted:
                return self._drop("unauthenticated")
        elif frame.a_offset < self._peer_floor:
            return self._drop("stale")
        else:
            try:
                verify_frame(self.store, frame, data)
            except SealError as error:
                return self._rejected(error, data, arrival)
        self._last_rx = now
        self._handlers[frame.command](frame, now)

    def _rejected(self, error: SealError, data: bytes, arrival: float) -> None:
        if error.retry and len(self._parked) < 2 * self.config.window:
            self._parked.append((data, arrival))
            return
        self._drop(error.reason)
        if error.reason.endswith("out_of_range"):
            self._sync_due = True  # the peer should learn our discarded offset

    def _plaintext(self, frame: Q3PFrame) -> bytes | None:
        try:
            return decrypt_payload(self.store, frame)
        except SealError as error:
            self._drop(error.reason)
            return None

    def _body(self, frame: Q3PFrame, payload: bytes | None) -> Any:
        if payload is None:
            return None
        try:
            return decode_control(frame.command, payload)
        except DecodeError:
            self._drop("malformed.body")
            return None

    def _on_handshake(self, frame: Q3PFrame, now: float) -> None:
        body = self._handshake_body(frame, self._plaintext(frame))
        if body is not None:
            self._learn_peer(body, frame, now)
            self._hs_acks[body.session_nonce] = None

    def _on_handshake_ack(self, frame: Q3PFrame, now: float) -> None:
        body = self._handshake_body(frame, self._plaintext(frame))
        if body is None:
            return
        self._learn_peer(body, frame, now)
        if frame.message_number != self.nonce & MASK:
            return self._drop("handshake.stale_echo")
        if self._state is State.HANDSHAKING:
            self._peer_floor = max(self._peer_floor, frame.a_offset)
            self._apply(Event.CONFIRMED, now)

    def _on_sync(self, frame: Q3PFrame, now: float) -> None:
        body = self._body(frame, self._plaintext(frame))
        if body is None:
            return
        self.store.skip_enc_to(max(body.discarded, body.dec_next))  # always safe
        if frame.command == Command.SYNC:
            self._sync_ack = True

    def _on_notice(self, frame: Q3PFrame, now: float) -> None:
        body = self._body(frame, self._plaintext(frame))
        if body is not None and frame.command != Command.KEEPALIVE:
            text = f"peer sent {frame.command.name}: {body.text}".rstrip(": ")
            self._apply(Event.PEER_CLOSED, now, text)

    def _on_ack(self, frame: Q3PFrame, now: float) -> None:
        if self._state is not State.UP:
            return self._drop("not_up")
        body = self._body(frame, self._plaintext(frame))
        if body is None:
            return
        result = self._tx.on_ack(body, now)
        if not result.valid:
            self._drop("ack.invalid")
        if result.newly_lost:
            self.counters["fast_retransmit"] += result.newly_lost
        if result.spurious:
            self.counters["rto.spurious"] += 1
        if result.go_back:
            self.counters["rto.go_back"] += result.go_back

    def _on_data(self, frame: Q3PFrame, now: float) -> None:
        if self._state is not State.UP:
            return self._drop("not_up")
        kind = self._rx.classify(frame.message_number)
        if kind != "new":
            self._ack_now = True
            return self._drop("duplicate" if kind == "duplicate" else "outside_window")
        payload = self._plaintext(frame)
        if payload is None:
            return
        in_order = frame.message_number == self._rx.nxt
        self._rx.hold(frame.message_number, (frame.channel, payload, frame.more_fragments))
        for channel, part, more in self._rx.release():
            self._deliver(channel, part, more)
        self._ack_now |= not in_order
        self._ack_count += 1
        if self._ack_deadline is None:
            self._ack_deadline = now + self.config.ack_delay

    def _deliver(self, channel: int, part: bytes, more: bool) -> None:
        message = self._reasm.add(channel, part, more)
        if message is False:
            self._drop("reassembly.too_large")
        elif message is not None:
            self._events.append(Delivered(channel, message))
            self._undrained += 1

    # -- sending --------------------------------------------------------------------------

    def _output(self, now: float) -> list[bytes]:
        self._poll(now)
        out: list[bytes] = []
        short = False
        if self._close_pending is not None:
            if self._control(out, Command.CLOSE, self._close_pending, self._tx.nxt):
                self._close_pending = None
        if self._state is not State.DOWN:
            short = not self._send_control(out, now)
            if self._state is State.UP and not short:
                short = not self._send_data(out, now)
            if self._state is State.UP and not out and not short \
                    and now >= self._last_tx + self.config.keepalive:
                short = not self._keepalive(out, now)
        if out:
            self._last_tx = now
        self._set_starved(short or self._starved and not out)
        return out

    def _set_starved(self, starved: bool) -> None:
        if starved != self._starved:
            self._starved = starved
            self._events.append(KeyStarved(starved))

    def _seal(self, out: list[bytes], number: int, command: Command, payload: bytes,
              **options: Any) -> bool:
        try:
            out.append(seal_frame(self.store, number, command, payload, **options))
        except KeyUnavailable:
            self.counters["key.starved"] += 1
            return False
        return True

    def _control(self, out: list[bytes], command: Command, body: Any, number: int) -> bool:
        return self._seal(out, number, command, encode_control(body), priority=CONTROL_PRIORITY)

    def _handshake(self) -> Handshake:
        positions = self.store.positions()
        return Handshake(self.config.node_id, self.config.link_id, self.nonce, self.config.mtu,
                         self.config.window, positions.enc_next,
                         max(positions.dec_next, positions.discarded),
                         self.store.config.key_ratio)

    def _sync(self) -> Sync:
        positions = self.store.positions()
        return Sync(self.nonce, positions.enc_next, positions.dec_next, positions.discarded)

    def _send_control(self, out: list[bytes], now: float) -> bool:
        """Handshake, SYNC and ACK frames that are due; ``False`` when key ran short."""
        if self._state is State.HANDSHAKING and self._hs_next is not None \
                and now >= self._hs_next:
            if not self._control(out, Command.HANDSHAKE, self._handshake(), 0):
                return False
            self._hs_next = now + self.config.handshake_retry
        for nonce in list(self._hs_acks):
            if not self._control(out, Command.HANDSHAKE_ACK, self._handshake(), nonce & MASK):
                return False
            del self._hs_acks[nonce]
        if self._sync_ack:
            if not self._control(out, Command.SYNC_ACK, self._sync(), self._tx.nxt):
                return False
            self._sync_ack = False
        if self._state is not State.UP:
            return True
        if self._sync_due and (self._sync_last is None or now - self._sync_last >= self._rtt.rto):
            if not self._send_sync(out, now):
                return False
        if self._ack_due(now):
            window = max(0, self.config.window - self._undrained)
            if not self._control(out, Command.ACK, self._rx.ack(window), self._tx.nxt):
                return False
            self._advertised = window
            self._ack_count, self._ack_now, self._ack_deadline = 0, False, None
        return True

    def _send_sync(self, out: list[bytes], now: float) -> bool:
        sync = self._sync()
        if not self._control(out, Command.SYNC, sync, self._tx.nxt):
            return False
        self._sync_due, self._sync_last, self._sync_floor = False, now, sync.discarded
        return True

    def _ack_due(self, now: float) -> bool:
        # at most half the window unacknowledged, so that a small window keeps flowing
        every = min(self.config.ack_every, max(1, self.config.window // 2))
        return (self._ack_now or self._ack_count >= every
                or (self._ack_deadline is not None and now >= self._ack_deadline))

    def _keepalive(self, out: list[bytes], now: float) -> bool:
        """The idle frame: a SYNC when the floor moved, a window update, or a KEEPALIVE."""
        if self.store.discard_below != self._sync_floor and (
                self._sync_last is None
                or now - self._sync_last >= SYNC_PERIOD * self.config.keepalive):
            return self._send_sync(out, now)
        if self._advertised < self.config.window - self._undrained:
            self._ack_now = True
            return self._send_control(out, now)
        return self._control(out, Command.KEEPALIVE, Notice(), self._tx.nxt)

    def _send_data(self, out: list[bytes], now: float) -> bool:
        """Retransmissions, then new fragments; ``False`` when key ran short."""
        for entry in self._tx.lost():
            if not self._seal_data(out, entry.number, entry.item):
                return False
            self._tx.retransmitted(entry, now)
            self.counters["retransmit"] += 1
        room = min(self.config.mtu, self._peer_mtu) - Q3P_HEADER_LEN - Q3P_TAG_LEN
        while self._tx.can_send():
            fragment = self._queue.peek(room)
            if fragment is None:
                break
            if not self._seal_data(out, self._tx.nxt, fragment):
                return False
            self._queue.commit(fragment)
            self._tx.register(fragment, now)
        return True

    def _seal_data(self, out: list[bytes], number: int, fragment: Fragment) -> bool:
        message = fragment.message
        return self._seal(out, number, Command.DATA, fragment.payload, encrypt=message.encrypt,
                          authenticate=self.config.authenticate_all or message.encrypt,
                          more=fragment.more, priority=message.priority,
                          channel=message.channel)

    # -- timers ---------------------------------------------------------------------------

    def _poll(self, now: float) -> None:
        if self.devices is not None and now >= self._last_poll + self.config.key_poll:
            self.advance_keys(now)

    def _timers(self, now: float) -> None:
        self._poll(now)
        while self._parked and self._parked[0][1] + self.config.dead_interval <= now:
            self._parked.popleft()
            self._drop("key.unavailable")
        if self._state is not State.UP:
            return
        if now >= self._last_rx + self.config.dead_interval:
            self._apply(Event.DEAD, now, "dead interval")
            return
        expired = self._tx.expire(now)
        if expired:
            self.counters["rto"] += expired


__all__ = ["Q3PEndpoint"]
