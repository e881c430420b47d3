"""Stateful tests: two Q3P endpoints over a faulty simulated channel (``tests/q3p_sim.py``).

Hypothesis drives sends, virtual time, forged / replayed / mutated frames and crashes of
one end; after every step no key range was handed out twice by either store, content is
intact and delivery is in order without duplicates; at the end every message of each
end's current instance has been delivered.  Also: the connection transition table pair
by pair.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from q3p_sim import Channel, LinkSim
from qbb.q3p.connection import TRANSITIONS, Action, Event, State, format_table, transition

PROFILE = os.environ.get("QBB_HYPOTHESIS_PROFILE", "ci")
EXAMPLES = {"dev": 8, "ci": 40, "deep": 300}.get(PROFILE, 40)

faults = st.builds(Channel, loss=st.sampled_from([0.0, 0.05, 0.2]),
                   duplicate=st.sampled_from([0.0, 0.1]), reorder=st.sampled_from([0.0, 0.3]),
                   corrupt=st.sampled_from([0.0, 0.05]))
nodes = st.sampled_from("AB")


class LinkMachine(RuleBasedStateMachine):
    """Two endpoints, a faulty channel and an attacker who can inject frames."""

    def __init__(self) -> None:
        super().__init__()
        self.sim: LinkSim | None = None

    @initialize(channel=faults, seed=st.integers(0, 2**16))
    def boot(self, channel: Channel, seed: int) -> None:
        self.sim = LinkSim(seed, channel=channel)
        self.sim.run(0.5)

    @rule(sender=nodes, size=st.integers(0, 4000), channel=st.integers(0, 2),
          priority=st.integers(0, 7), encrypt=st.booleans(), count=st.integers(1, 8))
    def send(self, sender: str, size: int, channel: int, priority: int, encrypt: bool,
             count: int) -> None:
        for _ in range(count):
            assert self.sim.send(sender, size, channel=channel, priority=priority,
                                 encrypt=encrypt)

    @rule(duration=st.floats(0.01, 3.0))
    def run(self, duration: float) -> None:
        self.sim.run(duration)

    @precondition(lambda self: self.sim is not None and self.sim.tap)
    @rule(pick=st.integers(0, 10**9))
    def replay(self, pick: int) -> None:
        # a replay names used or stale key (or is a frame the channel lost: then it is
        # merely late); the invariants check nothing is delivered twice
        dest, data = self.sim.tap[pick % len(self.sim.tap)]
        self.sim.inject(dest, data)

    @precondition(lambda self: self.sim is not None and self.sim.tap)
    @rule(pick=st.integers(0, 10**9), bit=st.integers(0, 10**9), cut=st.integers(-40, 40))
    def mutate(self, pick: int, bit: int, cut: int) -> None:
        dest, data = self.sim.tap[pick % len(self.sim.tap)]
        data = bytearray(data)
        if cut < 0:
            data = data[:cut]
        elif cut > 0:
            data += bytes(cut)
        else:
            data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
        self.sim.inject(dest, bytes(data))

    @rule(dest=nodes, data=st.binary(max_size=80), offset=st.integers(0, 1 << 20))
    def forge(self, dest: str, data: bytes, offset: int) -> None:
        endpoint = self.sim.nodes[dest].endpoint
        before = sum(endpoint.counters.values())
        frame = forged_frame(data, offset)
        self.sim.inject(dest, frame)
        self.sim.run(0.001)
        assert sum(endpoint.counters.values()) > before or endpoint.status()["parked"]

    @rule(name=nodes)
    def crash(self, name: str) -> None:
        self.sim.crash(name)

    @invariant()
    def keys_used_once(self) -> None:
        if self.sim is not None:
            self.sim.check_keys()

    @invariant()
    def delivery_in_order(self) -> None:
        if self.sim is not None:
            self.sim.check_delivery()

    def teardown(self) -> None:
        if self.sim is None:
            return
        self.sim.channel = Channel(loss=0.05)
        self.sim.settle(limit=300.0)
        assert self.sim.quiet(), {n: e.endpoint.status() for n, e in self.sim.nodes.items()}
        self.sim.check_delivery(complete=True)
        self.sim.check_keys()


def forged_frame(payload: bytes, offset: int) -> bytes:
    """A DATA frame with A set, a plausible A-offset and a random-looking tag."""
    length = 28 + len(payload) + 16
    header = struct.pack(">IIBBBBQQ", length, 0, 0x40, 1, 0, 0, 0, offset)
    return header + payload + bytes(range(16))


LinkMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestLink = LinkMachine.TestCase


# --- the connection table -------------------------------------------------------------------


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_pair_is_defined(state: State, event: Event) -> None:
    new, actions = transition(state, event)
    if (state, event) not in TRANSITIONS:
        assert (new, actions) == (state, ())
    else:
        assert isinstance(new, State) and all(isinstance(a, Action) for a in actions)


def test_table_semantics() -> None:
    assert transition(State.DOWN, Event.START) == (State.HANDSHAKING, (Action.SEND_HANDSHAKE,))
    assert transition(State.HANDSHAKING, Event.CONFIRMED)[0] is State.UP
    new, actions = transition(State.UP, Event.PEER_RESTART)
    assert new is State.HANDSHAKING and Action.RESET_SESSION in actions
    assert actions.index(Action.LINK_DOWN) < actions.index(Action.RESET_SESSION)
    new, actions = transition(State.UP, Event.DEAD)
    assert new is State.HANDSHAKING and Action.RESET_SESSION not in actions
    # LinkUp and LinkDown alternate: LINK_UP only from a state that is not up, LINK_DOWN from up
    for (state, _), (new, actions) in TRANSITIONS.items():
        if Action.LINK_UP in actions:
            assert state is not State.UP and new is State.UP
        if Action.LINK_DOWN in actions:
            assert state is State.UP and new is not State.UP
    assert "handshaking" in format_table()
