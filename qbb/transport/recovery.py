"""Loss detection that tolerates reordering and delay spikes: spurious retransmissions undone.

SECOQC's forwarders balance load per packet (seed 002 §2.5.3, eq. 1-2: a packet takes an
alternate next hop while the cheapest link is over its critical load), so the segments of
one connection travel over paths of different delay and arrive out of order; and a QKD
link that runs short of one-time pad holds its frames until key arrives, so a round trip
can stretch far beyond the retransmission timeout.  Three duplicate ACKs (RFC 5681) and
the timeout take both for loss: the sender cuts its window and sends again what was never
lost, and NewReno's partial ACKs (RFC 6582) make it resend the rest of the flight one
segment per ACK.  In a QKD network every spurious retransmission also spends one-time pad
on every hop.  This module keeps the sender's *recovery episodes* and finds out which
retransmissions were spurious:

* **Episode.**  A fast retransmit or a timeout opens an episode and remembers ``cwnd`` and
  ``ssthresh`` from before the reduction (a timeout during an open recovery continues the
  episode).  Every segment retransmitted in the episode is *pending*.  The last
  :data:`HISTORY` episodes are kept for late evidence.
* **ACK too soon** (Allman and Paxson, 1999).  A cumulative ACK that covers a
  retransmitted segment sooner than half the smallest round trip ever measured after that
  retransmission was caused by the original: that retransmission was spurious.
* **D-SACK** (RFC 2883, RFC 3708).  A receiver that gets data it already holds says so:
  the ACK it owes carries the duplicate's sequence range as an 8-byte payload
  ``left u32 | right u32`` (RFC 2883's first SACK block; a bare ACK's payload is opaque to
  the codec, so nothing changes for a peer that ignores it).  A block that starts at a
  pending segment marks that retransmission spurious.
* **F-RTO** (RFC 5682 §2.1, basic).  After a timeout the sender retransmits the oldest
  segment only.  If the first ACK after it acknowledges everything, recovery is over.  If
  it advances the window partly, the sender does not resend the next segment but may send
  two new ones; if the second ACK again advances the window over data sent before the
  timeout (and not resent), the originals are arriving: the timeout was spurious.  A
  duplicate ACK followed by no advancing ACK within ``reo_wnd`` instead confirms the
  loss, and the rest of the flight is resent one segment per partial ACK (RFC 6582).
* **Holes after a fast retransmit** (time-based, after RACK, RFC 8985 §6.2).  A partial
  ACK after a fast retransmit resends the next hole only once it is overdue: sent at
  least ``SRTT + reo_wnd`` ago.  ``reo_wnd`` is a quarter of the minimum RTT until a
  fast retransmission is found spurious; then it is the lateness measured on that segment
  (how much later than SRTT its original was acknowledged), the largest seen, at most the
  RTO, halved after :data:`QUIET_EPISODES` episodes without a spurious retransmission.
  After real loss the next hole is long overdue when the partial ACK arrives (it was sent
  a round trip before the first retransmission), so it goes at once as with NewReno;
  under reordering it is merely late and is given the time.  Duplicate ACKs at the hole
  that reach the threshold resend it at once (no second reduction).
* **Response.**  As soon as one retransmission of the open episode is known spurious the
  episode stops resending on partial ACKs.  When all of its retransmissions are known
  spurious it is *undone* (RFC 3708, RFC 4015): ``cwnd`` and ``ssthresh`` go back to at
  least their values from before it.
* **Adaptation.**  A fast retransmit found spurious measured the reordering: the
  duplicate ACKs that arrived before the hole was filled.  The duplicate-ACK threshold
  becomes one more than that (never lower, at most :data:`MAX_DUPTHRESH`), in the spirit of
  RFC 4653 and of Linux's ``tp->reordering``; the threshold in force is
  ``max(base, min(dupthresh, segments in flight - 1))``, so a small window still detects
  loss by duplicate ACKs wherever it could before.  A timeout found spurious feeds the
  round trip of the delayed original to the RTT estimator (RFC 4015 §2, the Eifel
  response), so the next timeout covers such a delay.

Real loss is repaired as before: its retransmission is neither acknowledged too soon nor
reported twice, and after a timeout the hole it leaves makes the receiver send duplicate
ACKs, so the episode is never undone.  Sans-IO: ``now`` is an argument.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass, field

from qbb.errors import DecodeError, EncodeError
from qbb.transport.packet import LAYER

__all__ = ["DSACK", "Episode", "HISTORY", "MAX_DUPTHRESH", "QUIET_EPISODES", "Recovery",
           "decode_dsack", "encode_dsack"]

MAX_DUPTHRESH = 64
HISTORY = 8  # episodes kept for late D-SACK evidence
QUIET_EPISODES = 16  # episodes without a spurious retransmission halve reo_wnd
#: The D-SACK block an ACK carries: the sequence range ``[left, right)`` received twice.
DSACK = struct.Struct("!II")
#: F-RTO steps: off, waiting for the first ACK after a timeout, for the second.
FRTO_OFF, FRTO_FIRST, FRTO_SECOND = 0, 1, 2


def encode_dsack(left: int, right: int) -> bytes:
    """The 8-byte D-SACK block of ``[left, right)`` (EncodeError outside 32 bits)."""
    try:
        return DSACK.pack(left, right)
    except (struct.error, TypeError):
        raise EncodeError(LAYER, "dsack", f"edges {left!r}, {right!r} are not u32") from None


def decode_dsack(payload: bytes) -> tuple[int, int]:
    """The block of an ACK's payload; DecodeError if the payload is not one."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DecodeError(LAYER, "dsack", 0, f"expected bytes, got {type(payload).__name__}")
    if len(payload) != DSACK.size:
        raise DecodeError(LAYER, "dsack", min(len(payload), DSACK.size),
                          f"a D-SACK block has {DSACK.size} bytes, not {len(payload)}")
    return DSACK.unpack(payload)


@dataclass(eq=False)
class Episode:
    """One loss-recovery episode of a sender."""

    kind: str  # "fast_retransmit" or "rto"
    prior_cwnd: float
    prior_ssthresh: float
    pending: dict[int, float] = field(default_factory=dict)  # seq -> last retransmitted at
    previous: dict[int, float] = field(default_factory=dict)  # seq -> sent before that
    late: dict[int, float] = field(default_factory=dict)  # seq -> acknowledged after SRTT +
    first_seq: int | None = None  # the segment the episode began by resending
    spurious: set[int] = field(default_factory=set)
    extent: int = 0  # duplicate ACKs before the first new ACK (reordering, in segments)
    filled: bool = False  # a new ACK arrived since the episode began
    delay: float = 0.0  # longest round trip of an original found delayed, not lost
    undone: bool = False


class Recovery:
    """Episodes, spurious-retransmission detection, F-RTO and the adaptive threshold."""

    def __init__(self, base_threshold: int) -> None:
        self.base = base_threshold
        self.dupthresh = base_threshold
        self.history: deque[Episode] = deque(maxlen=HISTORY)  # newest last
        self.frto = FRTO_OFF
        self.frto_room = 0  # segments F-RTO may have in flight while it waits (step 2b)
        self.frto_deadline: float | None = None  # a duplicate ACK's hole counts as lost
        self.timeout_at = -math.inf  # when the latest timeout fired
        self.reo_late = 0.0  # lateness of originals found delayed, not lost (seconds)
        self.quiet = 0  # episodes since the last spurious retransmission
        self.stats = {"spurious_retransmits": 0, "undos": 0, "dsacks": 0,
                      "spurious_timeouts": 0}

    @property
    def episode(self) -> Episode | None:
        """The newest episode (open until undone or replaced)."""
        return self.history[-1] if self.history else None

    def threshold(self, in_flight: int) -> int:
        """Duplicate ACKs that signal loss now, with ``in_flight`` segments out."""
        return max(self.base, min(self.dupthresh, in_flight - 1))

    def window(self, cwnd: int) -> int:
        """Segments that may be in flight: ``cwnd``, or more while F-RTO sends new data."""
        return max(cwnd, self.frto_room) if self.frto == FRTO_SECOND else cwnd

    def reo_wnd(self, srtt: float, min_rtt: float, cap: float) -> float:
        """How much later than SRTT a segment may be acknowledged before it counts as lost."""
        quarter = (min_rtt if math.isfinite(min_rtt) else srtt) / 4
        return min(cap, max(quarter, self.reo_late))

    # -- episodes --------------------------------------------------------------------

    def begin(self, kind: str, cwnd: float, ssthresh: float, in_recovery: bool,
              now: float) -> None:
        """A reduction for loss is about to happen (call before reducing); a timeout
        while the sender is still recovering (``in_recovery``) continues the episode."""
        episode = self.episode
        self.frto_deadline = None
        self.frto, self.timeout_at = (FRTO_FIRST, now) if kind == "rto" else \
            (FRTO_OFF, self.timeout_at)
        if kind == "rto" and in_recovery and episode is not None and not episode.undone:
            episode.kind = "rto"
            return
        self.quiet += 1
        if self.quiet >= QUIET_EPISODES:  # no spurious retransmission in that many
            self.quiet, self.reo_late = 0, self.reo_late / 2
        self.history.append(Episode(kind, cwnd, ssthresh))

    def retransmitted(self, seq: int, previous: float | None, now: float) -> None:
        """Segment ``seq``, last sent at ``previous``, is sent again now."""
        episode = self.episode
        if episode is not None and not episode.undone:
            episode.pending[seq] = now
            if previous is not None:
                episode.previous.setdefault(seq, previous)
            if episode.first_seq is None:
                episode.first_seq = seq

    def new_ack(self, dupacks: int) -> None:
        """A cumulative ACK advanced; ``dupacks`` arrived before it in this episode."""
        episode = self.episode
        if episode is not None and not episode.filled:
            episode.filled, episode.extent = True, dupacks

    # -- findings --------------------------------------------------------------------

    def acked(self, seq: int, sent_at: float, first_sent: float, now: float,
              min_rtt: float, srtt: float) -> None:
        """Segment ``seq`` (last sent at ``sent_at``) was covered by a new ACK."""
        episode = self.episode
        if episode is None or episode.undone:
            return
        if seq in episode.pending:
            if seq in episode.previous:
                episode.late[seq] = now - episode.previous[seq] - srtt
            if math.isfinite(min_rtt) and now - episode.pending[seq] < min_rtt / 2:
                self._spurious(episode, seq, now - first_sent)
        elif self.frto == FRTO_SECOND and sent_at < self.timeout_at:
            self._frto_spurious(episode, now - first_sent)

    def _frto_spurious(self, episode: Episode, delay: float) -> None:
        """F-RTO step 3b: data sent before the timeout was acknowledged by the second ACK."""
        self.stats["spurious_timeouts"] += 1
        for seq in list(episode.pending):
            if seq not in episode.spurious:
                self._spurious(episode, seq, delay)
        self.frto, self.frto_deadline = FRTO_OFF, None

    def dsack(self, left: int) -> bool:
        """A D-SACK block starting at ``left``; True if it marks a retransmission of the
        open episode spurious (older episodes only teach the threshold and reo_wnd)."""
        self.stats["dsacks"] += 1
        for episode in reversed(self.history):
            if left in episode.pending and left not in episode.spurious:
                self._spurious(episode, left, 0.0)
                return episode is self.episode and not episode.undone
        return False

    def _spurious(self, episode: Episode, seq: int, delay: float) -> None:
        episode.spurious.add(seq)
        episode.delay = max(episode.delay, delay)
        self.stats["spurious_retransmits"] += 1
        self.quiet = 0
        if episode.kind != "fast_retransmit":
            return  # a timeout: the delay was a spike (or a lost ACK), not reordering
        self.reo_late = max(self.reo_late, episode.late.get(seq, 0.0))
        if seq == episode.first_seq and episode.filled:
            self.dupthresh = min(MAX_DUPTHRESH, max(self.dupthresh, episode.extent + 1))

    # -- during recovery -------------------------------------------------------------

    def partial_ack(self, in_flight: int) -> bool:
        """A partial ACK during recovery: True if the next hole may be resent now."""
        self.frto_deadline = None
        if self.frto == FRTO_FIRST:
            self.frto = FRTO_SECOND  # hold the retransmissions, send new data instead
            self.frto_room = in_flight + 2
            return False
        if self.frto == FRTO_SECOND:
            self.frto = FRTO_OFF  # the second ACK did not show the timeout spurious
        return not self.stop_retransmitting()

    def hole_due(self, sent_at: float, now: float, srtt: float, min_rtt: float,
                 cap: float) -> float:
        """When the next hole (last sent at ``sent_at``) counts as lost: at once after a
        timeout (go-back, RFC 6582), ``sent_at + SRTT + reo_wnd`` after a fast retransmit."""
        episode = self.episode
        if episode is None or episode.kind != "fast_retransmit":
            return now
        return sent_at + srtt + self.reo_wnd(srtt, min_rtt, cap)

    def duplicate_ack(self, dupacks: int, in_flight: int, hole: int, now: float,
                      reo_wnd: float) -> float | None:
        """A duplicate ACK during recovery: when the hole at ``hole`` is to be resent, or
        None.  F-RTO (step 3a) takes it as lost if no ACK advances within ``reo_wnd``;
        after a fast retransmit it goes once its duplicate ACKs reach the threshold."""
        if self.frto == FRTO_SECOND:
            if self.frto_deadline is None:
                self.frto_deadline = now + reo_wnd
            return self.frto_deadline
        if self.frto == FRTO_FIRST:
            self.frto = FRTO_OFF  # step 2a: a duplicate first: conventional recovery
        episode = self.episode
        if episode is not None and episode.kind == "fast_retransmit" and not episode.undone \
                and hole not in episode.pending and dupacks >= self.threshold(in_flight):
            return now
        return None

    def hole_timer(self) -> bool:
        """The hole deadline passed: True if the hole is to be resent (F-RTO: loss real)."""
        self.frto, self.frto_deadline = FRTO_OFF, None
        return not self.stop_retransmitting()

    def leave_frto(self) -> None:
        """Recovery is over (a full ACK), or a SYN or FIN timed out: F-RTO has nothing to do."""
        self.frto, self.frto_deadline = FRTO_OFF, None

    # -- response --------------------------------------------------------------------

    def stop_retransmitting(self) -> bool:
        """Whether the open episode has shown a retransmission to be spurious."""
        episode = self.episode
        return episode is not None and not episode.undone and bool(episode.spurious)

    def undo_due(self) -> bool:
        """Every retransmission of the open episode is known spurious."""
        episode = self.episode
        return episode is not None and not episode.undone and bool(episode.pending) \
            and episode.spurious >= episode.pending.keys()

    def undo(self) -> Episode:
        """Close the open episode as spurious; the episode."""
        episode = self.episode
        episode.undone = True
        self.frto, self.frto_deadline = FRTO_OFF, None
        self.stats["undos"] += 1
        return episode
