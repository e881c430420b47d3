"""The blocking client library (qbb.client) and the ``qbb key`` command over real loopback
TCP: the server runs in the test's trio nursery, the blocking calls in worker threads."""

import base64
import functools
import inspect
import json
import socket

import pytest
import trio

from keyapi_fake import FakeNetwork, serve_nodes
from qbb.cli import main
from qbb.client import AsyncKeyClient, KeyApiConnectionError, KeyClient
from qbb.keyapi.model import ApiError, Qos, Status

LIMIT = 20


@pytest.fixture
async def net(nursery):
    network = FakeNetwork()
    network.servers = await serve_nodes(nursery, network, "AB")
    network.api = {name: f"127.0.0.1:{s.port}" for name, s in network.servers.items()}
    return network


#: trio >= 0.23 names it abandon_on_cancel; older releases, cancellable
_ABANDON = ("abandon_on_cancel" if "abandon_on_cancel"
            in inspect.signature(trio.to_thread.run_sync).parameters else "cancellable")


async def in_thread(func, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(func, *args, **kwargs),
                                         **{_ABANDON: True})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_blocking_client_three_phases(net):
    bob = KeyClient(port=net.servers["B"].port, timeout=5)
    alice = KeyClient(port=net.servers["A"].port, timeout=5)
    result = {}

    async def accept():
        result["bob"] = await in_thread(bob.accept, "bob", timeout_s=5)

    with trio.fail_after(LIMIT), bob, alice:
        assert await in_thread(bob.register, "bob") > 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            result["alice"] = await in_thread(alice.open_connect, "bob", Qos(key_chunk_size=64),
                                              timeout_s=5)
        ksid = result["alice"]
        assert result["bob"] == ksid
        mine = await in_thread(alice.get_keys, ksid, 4)
        theirs = [await in_thread(bob.get_key, ksid) for _ in range(4)]
        assert [(k.index, k.bits, k.key) for k in mine] == [(k.index, k.bits, k.key) for k in theirs]
        assert [k.index for k in mine] == [0, 1, 2, 3] and mine[0].bits == 64
        await in_thread(alice.close, ksid)
        with pytest.raises(ApiError) as info:
            await in_thread(bob.get_key, ksid)
        assert info.value.status == Status.PEER_GONE
        await in_thread(bob.unregister, "bob")
        assert (await in_thread(bob.status))["registrations"] == []
    # errors did not cost the connection: one session per client
    assert net.servers["B"].counters["sessions"] == 1


async def test_connection_refused_names_the_address():
    port = free_port()
    with pytest.raises(KeyApiConnectionError) as info:
        await in_thread(KeyClient(port=port, timeout=2).status)
    assert f"127.0.0.1:{port}" in str(info.value) and "--key-api" in str(info.value)
    with pytest.raises(KeyApiConnectionError) as info:
        await AsyncKeyClient(port=port, timeout=2).status()
    assert f"127.0.0.1:{port}" in str(info.value)


async def canned_server(nursery, answer: bytes | None) -> int:
    """A server that reads a request and sends ``answer`` (None: stays silent)."""
    async def handler(stream):
        await stream.receive_some(65536)
        if answer is None:
            await trio.sleep_forever()
        await stream.send_all(answer)
        await stream.aclose()
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                      host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


@pytest.mark.parametrize("answer, words", [
    (b"not json\n", "invalid answer"),
    (b'{"status":0,"status_name":"SUCCESSFUL","id":999,"node":{}}\n', "answered id 999"),
    (b'{"status":0,"status_name":"SUCC', "closed the connection"),
    (None, "did not answer"),
])
async def test_a_broken_server_is_a_connection_error(nursery, answer, words):
    port = await canned_server(nursery, answer)
    with trio.fail_after(LIMIT):
        with pytest.raises(KeyApiConnectionError) as info:
            await in_thread(KeyClient(port=port, timeout=0.3).status)
        assert words in str(info.value)
        with pytest.raises(KeyApiConnectionError) as info:
            await AsyncKeyClient(port=port, timeout=0.3).status()
        assert words in str(info.value)


async def run_cli(*argv):
    return await in_thread(main, ["key", *argv])


async def test_cli_session(net, capsys):
    a, b = net.api["A"], net.api["B"]
    with trio.fail_after(LIMIT):
        assert await run_cli("--api", b, "register", "cli-app") == 0
        assert int(capsys.readouterr().out) > 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_cli, "--api", b, "accept", "cli-app", "--timeout", "5")
            assert await run_cli("--api", a, "open", "cli-app", "--chunk-bits", "128",
                                 "--timeout", "5") == 0
        ksids = capsys.readouterr().out.split()
        assert len(ksids) == 2 and ksids[0] == ksids[1]
        ksid = ksids[0]
        assert await run_cli("--api", a, "get", ksid, "--count", "3") == 0
        mine = capsys.readouterr().out.splitlines()
        assert await run_cli("--api", b, "get", ksid.upper(), "--count", "3", "--json",
                             "--format", "base64") == 0
        theirs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line.split()[0] for line in mine] == ["0", "1", "2"]
        assert [bytes.fromhex(line.split()[1]) for line in mine] == [
            base64.b64decode(t["key"]) for t in theirs]
        assert {t["bits"] for t in theirs} == {128} and theirs[0]["ksid"] == ksid
        assert await run_cli("--api", a, "status", "--json") == 0
        assert json.loads(capsys.readouterr().out)["open_streams"] == 1
        assert await run_cli("--api", a, "status") == 0
        assert "name: A" in capsys.readouterr().out
        assert await run_cli("--api", a, "close", ksid) == 0
        assert await run_cli("--api", b, "get", ksid) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("qbb key: PEER_GONE: ")
        assert await run_cli("--api", b, "unregister", "cli-app") == 0


async def test_cli_failures_and_exit_codes(net, capsys, monkeypatch):
    with trio.fail_after(LIMIT):
        assert await run_cli("--api", net.api["A"], "open", "nobody") == 2
        assert capsys.readouterr().err.startswith("qbb key: UNKNOWN_APPLICATION: ")
        assert await run_cli("--api", net.api["A"], "accept", "nobody", "--timeout", "1") == 2
        assert "UNKNOWN_APPLICATION" in capsys.readouterr().err
        assert await run_cli("--api", f"127.0.0.1:{free_port()}", "status") == 1
        assert "is a node's key API listening there?" in capsys.readouterr().err
        assert await run_cli("--api", net.api["A"], "register", "no spaces") == 2
        assert "'name'" in capsys.readouterr().err
        monkeypatch.setenv("QBB_KEY_API", net.api["B"])
        assert await run_cli("register", "via-env") == 0
        assert "via-env" in net.registry and net.registry["via-env"] == "B"


@pytest.mark.parametrize("argv", [
    ["key"], ["key", "get"], ["key", "--api", "nohost", "status"],
    ["key", "--api", "127.0.0.1:99999", "status"], ["key", "get", "x", "--count", "0"],
    ["key", "get", "x", "--count", "1025"], ["key", "accept", "a", "--timeout", "0"],
    ["key", "open", "a", "--chunk-bits", "65536"], ["key", "open", "a", "--service", "gold"],
    ["key", "get", "x", "--format", "raw"],
])
def test_cli_argument_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: qbb key" in capsys.readouterr().err


def test_cli_help_covers_every_action(capsys):
    for action in ("register", "unregister", "accept", "open", "get", "close", "status"):
        with pytest.raises(SystemExit):
            main(["key", action, "--help"])
        assert "usage: qbb key " + action in capsys.readouterr().out
