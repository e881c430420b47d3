"""Send queue with priorities, fragmentation and reassembly (seed 002 §3.1: M flag, Priority).

Sender (:class:`SendQueue`)
    One FIFO of messages per channel.  The next frame comes from the channel whose queue
    holds the highest priority (a channel inherits the highest priority queued in it, so a
    message never overtakes an earlier one of its own channel); ties go to the channel
    whose head message was queued first.  A message larger than a frame is cut into
    fragments when they are sent (at the link MTU agreed by then); every fragment but the
    last has the M flag.  Fragments of different channels may interleave.

Receiver (:class:`Reassembler`)
    Frames arrive in message-number order (:mod:`qbb.q3p.arq`); per channel the payloads
    are joined until a frame without M completes a message.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

PRIORITIES = 8


@dataclass(eq=False)
class Message:
    channel: int
    priority: int
    payload: bytes
    encrypt: bool
    seq: int  # queue order
    sent: int = 0  # bytes already cut into fragments


@dataclass(eq=False)
class Fragment:
    message: Message
    payload: bytes
    more: bool


class _Channel:
    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        self.by_priority = [0] * PRIORITIES

    def priority(self) -> int:
        return max(p for p in range(PRIORITIES) if self.by_priority[p])

    def add(self, message: Message, front: bool = False) -> None:
        if front:
            self.messages.appendleft(message)
        else:
            self.messages.append(message)
        self.by_priority[message.priority] += 1

    def pop(self) -> Message:
        message = self.messages.popleft()
        self.by_priority[message.priority] -= 1
        return message


class SendQueue:
    """Messages waiting for frames, with the backpressure limits of ``send``."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.channels: dict[int, _Channel] = {}
        self.messages = 0
        self.bytes = 0
        self._seq = 0

    def __len__(self) -> int:
        return self.messages

    def push(self, channel: int, priority: int, payload: bytes, encrypt: bool) -> bool:
        if self.messages >= self.max_messages or self.bytes + len(payload) > self.max_bytes:
            return False
        self._seq += 1
        self.channels.setdefault(channel, _Channel()).add(
            Message(channel, priority, payload, encrypt, self._seq))
        self.messages += 1
        self.bytes += len(payload)
        return True

    def _best(self) -> _Channel | None:
        best, key = None, None
        for chan in self.channels.values():
            if chan.messages:
                candidate = (-chan.priority(), chan.messages[0].seq)
                if key is None or candidate < key:
                    best, key = chan, candidate
        return best

    def peek(self, max_payload: int) -> Fragment | None:
        """The next fragment (not yet taken: call :meth:`commit` once it was sent)."""
        chan = self._best()
        if chan is None:
            return None
        message = chan.messages[0]
        end = min(len(message.payload), message.sent + max_payload)
        return Fragment(message, message.payload[message.sent:end], end < len(message.payload))

    def commit(self, fragment: Fragment) -> None:
        message = fragment.message
        message.sent += len(fragment.payload)
        if not fragment.more:
            self.channels[message.channel].pop()
            self.messages -= 1
            self.bytes -= len(message.payload)

    def partial(self) -> list[Message]:
        """Head messages of which some fragments were already sent."""
        return [chan.messages[0] for chan in self.channels.values()
                if chan.messages and chan.messages[0].sent]

    def requeue(self, messages: list[Message]) -> None:
        """Put ``messages`` back at the head of their channels, to be sent from the start."""
        unique = {id(message): message for message in messages}.values()
        for message in sorted(unique, key=lambda m: m.seq, reverse=True):
            chan = self.channels.setdefault(message.channel, _Channel())
            if chan.messages and chan.messages[0] is message:
                message.sent = 0
                continue
            message.sent = 0
            chan.add(message, front=True)
            self.messages += 1
            self.bytes += len(message.payload)


class Reassembler:
    """Per-channel reassembly of in-order fragments; messages above ``limit`` are dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: dict[int, list[bytes]] = {}
        self.sizes: dict[int, int] = {}
        self.discarding: set[int] = set()

    def add(self, channel: int, payload: bytes, more: bool) -> bytes | None | bool:
        """The complete message, ``None`` (more to come) or ``False`` (too large: dropped)."""
        if channel in self.discarding:
            if not more:
                self.discarding.discard(channel)
                return False
            return None
        parts = self.parts.get(channel)
        if parts is None and not more and len(payload) <= self.limit:
            return payload
        size = self.sizes.get(channel, 0) + len(payload)
        if size > self.limit:
            self.parts.pop(channel, None)
            self.sizes.pop(channel, None)
            if more:
                self.discarding.add(channel)
                return None
            return False
        if parts is None:
            parts = self.parts[channel] = []
        parts.append(payload)
        self.sizes[channel] = size
        if more:
            return None
        del self.parts[channel], self.sizes[channel]
        return b"".join(parts)

    def clear(self) -> None:
        self.parts.clear()
        self.sizes.clear()
        self.discarding.clear()


__all__ = ["Fragment", "Message", "Reassembler", "SendQueue"]
