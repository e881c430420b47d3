"""Key API server over real loopback TCP with the in-memory backend (tests/keyapi_fake.py).

The three SECOQC phases end to end, many concurrent sessions, every failure status, and
sessions that send garbage, over-long lines or vanish: the server answers or ends that
session only, and goes on serving."""

import json
import uuid

import pytest
import trio

from keyapi_fake import FakeNetwork, serve_nodes
from qbb.client import AsyncKeyClient
from qbb.keyapi.model import ApiError, KeyChunk, Status
from qbb.keyapi.server import KeyApiServer, serve_key_api

LIMIT = 10


@pytest.fixture
async def net(nursery):
    """A fake network with nodes A, B, C, each serving its key API; ``net.ports[name]``."""
    network = FakeNetwork()
    network.servers = await serve_nodes(nursery, network, "ABC")
    network.ports = {name: server.port for name, server in network.servers.items()}
    return network


def client(net, name, timeout=5.0):
    return AsyncKeyClient(port=net.ports[name], timeout=timeout)


async def connect_pair(net, app, server_node="B", client_node="A", **qos):
    """Register ``app`` at ``server_node``; accept there while ``client_node`` opens."""
    async with client(net, server_node) as bob:
        await bob.register(app)
        result = {}
        async with trio.open_nursery() as nursery:
            async def accept():
                result["server"] = await bob.accept(app, timeout_s=5)
            nursery.start_soon(accept)
            async with client(net, client_node) as alice:
                result["client"] = await alice.open_connect(app, **qos)
    return result["client"], result["server"]


async def test_three_phases_end_to_end(net):
    with trio.fail_after(LIMIT):
        ksid_a, ksid_b = await connect_pair(net, "bob")
        assert ksid_a == ksid_b and str(uuid.UUID(ksid_a)) == ksid_a
        async with client(net, "A") as alice, client(net, "B") as bob:
            first_a, first_b = await alice.get_key(ksid_a), await bob.get_key(ksid_b)
            assert (first_a.index, first_a.key) == (first_b.index, first_b.key) == (0, first_b.key)
            assert first_a.bits == 256 and len(first_a.key) == 32
            more_b = await bob.get_keys(ksid_b, 5)
            more_a = await alice.get_keys(ksid_a, 5)
            assert [k.index for k in more_a] == [1, 2, 3, 4, 5]
            assert [(k.index, k.key) for k in more_a] == [(k.index, k.key) for k in more_b]
            await alice.close(ksid_a)
            with pytest.raises(ApiError) as gone:
                await bob.get_key(ksid_b)
            assert gone.value.status == Status.PEER_GONE
            with pytest.raises(ApiError) as unknown:
                await alice.get_key(ksid_a)
            assert unknown.value.status == Status.UNKNOWN_KSID


async def test_key_chunk_size_is_honoured(net):
    with trio.fail_after(LIMIT):
        ksid, _ = await connect_pair(net, "odd", key_chunk_size=12)
        async with client(net, "B") as bob:
            chunk = await bob.get_key(ksid)
        assert chunk.bits == 12 and len(chunk.key) == 2


async def test_many_concurrent_sessions_get_their_own_keys(net):
    pairs = 40
    seen: dict[str, list[tuple[int, bytes]]] = {}

    async def one_pair(i):
        ksid, _ = await connect_pair(net, f"app{i}", server_node="BC"[i % 2])
        async with client(net, "A") as alice, client(net, "BC"[i % 2]) as other:
            mine = await alice.get_keys(ksid, 3)
            theirs = await other.get_keys(ksid, 3)
        assert [(k.index, k.key) for k in mine] == [(k.index, k.key) for k in theirs]
        assert all(k.ksid == ksid for k in mine + theirs)
        seen[ksid] = [(k.index, k.key) for k in mine]

    with trio.fail_after(LIMIT * 3):
        async with trio.open_nursery() as nursery:
            for i in range(pairs):
                nursery.start_soon(one_pair, i)
    keys = [key for chunks in seen.values() for _, key in chunks]
    assert len(seen) == pairs and len(set(keys)) == len(keys) == 3 * pairs
    assert net.servers["A"].counters["sessions"] >= pairs


async def expect(status, call, *args, **kwargs):
    with pytest.raises(ApiError) as info:
        await call(*args, **kwargs)
    assert info.value.status == status and info.value.reason
    return info.value


async def test_every_failure_status(net):
    with trio.fail_after(LIMIT):
        async with client(net, "A") as alice, client(net, "B") as bob:
            await expect(Status.UNKNOWN_APPLICATION, alice.open_connect, "nobody")
            await expect(Status.UNKNOWN_APPLICATION, alice.accept, "nobody", timeout_s=1)
            await expect(Status.UNKNOWN_APPLICATION, alice.unregister, "nobody")
            await bob.register("srv")
            await expect(Status.NAME_IN_USE, bob.register, "srv")
            await expect(Status.NAME_IN_USE, alice.register, "srv")
            await expect(Status.TIMEOUT, bob.accept, "srv", timeout_s=0.2)
            await expect(Status.QOS_NOT_MET, alice.open_connect, "srv", service="guaranteed",
                         rate_bps=10**9)
            await expect(Status.UNKNOWN_KSID, alice.get_key, str(uuid.uuid4()))
            await expect(Status.UNKNOWN_KSID, alice.close, str(uuid.uuid4()))
            net.cut("A", "B")
            await expect(Status.NO_QKD_CONNECTION, alice.open_connect, "srv")
            await bob.unregister("srv")
            await expect(Status.UNKNOWN_APPLICATION, alice.open_connect, "srv")
            # the sessions survived every failure
            assert (await alice.status())["name"] == "A"


async def test_insufficient_key_and_short_reads(net):
    with trio.fail_after(LIMIT):
        ksid, _ = await connect_pair(net, "scarce")
        async with client(net, "A") as alice, client(net, "B") as bob:
            net.key_bits = 3 * 256
            short = await alice.get_keys(ksid, 5, timeout_s=0.3)
            assert [k.index for k in short] == [0, 1, 2]
            await expect(Status.INSUFFICIENT_KEY, alice.get_key, ksid, timeout_s=0.2)
            assert [k.key for k in await bob.get_keys(ksid, 3)] == [k.key for k in short]
            net.add_key(256)
            assert (await bob.get_key(ksid)).index == 3
        assert net.servers["A"].counters["short_get_key"] == 1


async def test_peer_reset_by_the_network(net):
    with trio.fail_after(LIMIT):
        ksid, _ = await connect_pair(net, "fragile")
        net.reset(ksid)
        async with client(net, "A") as alice:
            await expect(Status.PEER_GONE, alice.get_key, ksid)


async def test_unexpected_backend_exception_is_internal_error(net):
    with trio.fail_after(LIMIT):
        async with client(net, "A") as alice:
            net.explode = RuntimeError("backend bug")
            error = await expect(Status.INTERNAL_ERROR, alice.register, "x")
            assert "RuntimeError" in error.reason
            await expect(Status.INTERNAL_ERROR, alice.status)
            net.explode = None
            assert await alice.register("x") > 0
    assert net.servers["A"].counters["internal_errors"] == 2


class _Misbehaving:
    """A backend that hangs in get_key and answers malformed keys in accept's place."""

    def status(self):
        return {}

    async def get_key(self, ksid, timeout_s):
        await trio.sleep_forever()

    async def accept(self, name, timeout_s):
        return "not-a-uuid"

    def register(self, name):
        return KeyChunk(str(uuid.uuid4()), 0, 8, b"\x00")   # not a port


async def test_misbehaving_backend_cannot_break_the_server(nursery):
    server = KeyApiServer(_Misbehaving())
    port = await nursery.start(server.serve)
    with trio.fail_after(LIMIT):
        async with AsyncKeyClient(port=port, timeout=5) as api:
            await expect(Status.TIMEOUT, api.get_key, str(uuid.uuid4()), timeout_s=0.05)
            await expect(Status.INTERNAL_ERROR, api.accept, "a", timeout_s=1)
            await expect(Status.INTERNAL_ERROR, api.register, "a")
            assert (await api.status())["key_api"]["port"] == port


async def raw_session(port, payload: bytes, half_close=False) -> list[dict]:
    """Send ``payload`` on a fresh TCP session; every answer line until EOF or 1 s idle."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    answers, buffer = [], b""
    async with stream:
        await stream.send_all(payload)
        if half_close:
            await stream.send_eof()
        while True:
            with trio.move_on_after(1.0) as idle:
                data = await stream.receive_some(65536)
            if idle.cancelled_caught or not data:
                break
            buffer += data
    answers = [json.loads(line) for line in buffer.splitlines()]
    return answers


async def test_garbage_lines_get_bad_request_and_the_session_goes_on(net):
    port = net.ports["A"]
    with trio.fail_after(LIMIT):
        answers = await raw_session(port, b'garbage\n\xff\xfe\n{"op":"FLY","id":7}\n'
                                          b'{"op":"GET_KEY","ksid":"x","id":"k"}\n'
                                          b'{"op":"STATUS","id":8}\n')
    assert [a["status_name"] for a in answers] == ["BAD_REQUEST"] * 4 + ["SUCCESSFUL"]
    assert [a.get("id") for a in answers] == [None, None, 7, "k", 8]
    assert "'op'" in answers[2]["reason"] and "'ksid'" in answers[3]["reason"]
    assert answers[4]["node"]["key_api"]["bad_requests"] == 4


async def test_over_long_line_ends_that_session_only(net):
    port = net.ports["A"]
    with trio.fail_after(LIMIT):
        answers = await raw_session(port, b"x" * 70_000)
        assert len(answers) == 1 and answers[0]["status"] == Status.BAD_REQUEST
        assert "'line'" in answers[0]["reason"]
        async with client(net, "A") as alice:
            assert (await alice.status())["key_api"]["oversize_lines"] == 1


async def test_unterminated_last_line_is_answered(net):
    with trio.fail_after(LIMIT):
        answers = await raw_session(net.ports["A"], b'{"op":"STATUS","id":1}', half_close=True)
    assert answers[0]["status"] == 0 and answers[0]["id"] == 1


async def test_vanishing_peers_do_not_hurt_the_server(net):
    port = net.ports["B"]
    with trio.fail_after(LIMIT):
        async with client(net, "B") as bob:
            await bob.register("ghost")
        for payload in (b"", b'{"op":"STA', b'{"op":"ACCEPT","name":"ghost","timeout_s":5}\n'):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(payload)
            await stream.aclose()
        async with client(net, "B") as bob:
            assert (await bob.status())["registrations"] == ["ghost"]


async def wait_for(predicate):
    while not predicate():
        await trio.sleep(0.01)


async def test_an_abandoned_accept_does_not_take_the_next_connection(net):
    server = net.servers["B"]
    with trio.fail_after(LIMIT):
        async with client(net, "B") as bob:
            await bob.register("svc")
        stream = await trio.open_tcp_stream("127.0.0.1", net.ports["B"])
        await stream.send_all(b'{"op":"ACCEPT","name":"svc","timeout_s":60}\n')
        await wait_for(lambda: server.counters["requests"] == 2)
        await stream.aclose()
        await wait_for(lambda: server.counters["hangups"] == 1)
        ksid_a, ksid_b = await connect_pair_registered(net, "svc")
        assert ksid_a == ksid_b


async def connect_pair_registered(net, app):
    result = {}
    async with client(net, "B") as bob, client(net, "A") as alice:
        async with trio.open_nursery() as nursery:
            async def accept():
                result["server"] = await bob.accept(app, timeout_s=5)
            nursery.start_soon(accept)
            result["client"] = await alice.open_connect(app)
    return result["client"], result["server"]


async def test_an_abandoned_get_key_takes_no_key(net):
    server = net.servers["A"]
    with trio.fail_after(LIMIT):
        ksid, _ = await connect_pair(net, "patient")
        net.key_bits = 0
        stream = await trio.open_tcp_stream("127.0.0.1", net.ports["A"])
        await stream.send_all(b'{"op":"GET_KEY","ksid":"%s","timeout_s":60}\n' % ksid.encode())
        await wait_for(lambda: server.counters["requests"] == 2)
        await stream.aclose()
        await wait_for(lambda: server.counters["hangups"] == 1)
        net.add_key(256)
        async with client(net, "A") as alice, client(net, "B") as bob:
            mine, theirs = await alice.get_key(ksid), await bob.get_key(ksid)
        assert mine.index == theirs.index == 0 and mine.key == theirs.key


async def test_sessions_beyond_the_bound_are_refused(nursery):
    network = FakeNetwork()
    server = KeyApiServer(network.node("A"), max_sessions=2)
    port = await nursery.start(server.serve)
    with trio.fail_after(LIMIT):
        async with AsyncKeyClient(port=port) as one, AsyncKeyClient(port=port) as two:
            await one.status()
            await two.status()
            answers = await raw_session(port, b'{"op":"STATUS"}\n')
            assert answers[0]["status"] == Status.INTERNAL_ERROR
            assert "busy" in answers[0]["reason"]
        async with AsyncKeyClient(port=port) as three:   # slots free again
            assert (await three.status())["key_api"]["sessions_refused"] == 1


async def test_serve_key_api_reports_its_port(nursery):
    network = FakeNetwork()
    port = await nursery.start(serve_key_api, network.node("Z"))
    with trio.fail_after(LIMIT):
        async with AsyncKeyClient(port=port) as api:
            assert (await api.status())["name"] == "Z"
