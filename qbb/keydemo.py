"""Demonstration applications on a running network: SECOQC's three phases end to end.

``qbb run`` uses this to show that applications at distant nodes obtain identical keys
(seed 002 §3.4, Figs. 15-16): for each (client node, server node) pair a server
application ``demo-<server>-<n>`` *registers* at its node; once the directory has spread
the name to the client's node, the client application *connects* (OPEN_CONNECT) while
the server application waits in ACCEPT; in the *secure-communication* phase both ask for
``keys`` keys (GET_KEY) and the results are compared index by index (by SHA-256 digest:
key bytes are never printed or kept).  The calls go through each node's
:class:`~qbb.keyapi.model.KeyBackend` (the same one the TCP key API serves).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import networkx as nx
import trio

from qbb.keyapi.model import ApiError, KeyBackend, Qos
from qbb.topology import Topology

__all__ = ["farthest_pair", "run_app_stream", "run_app_streams"]


def farthest_pair(topology: Topology) -> tuple[str, str]:
    """The first node and the node the most hops away from it (first in name order)."""
    graph = nx.Graph((link.a, link.b) for link in topology.links)
    first = topology.nodes[0].name
    hops = nx.single_source_shortest_path_length(graph, first)
    return first, max(sorted(hops), key=lambda name: hops[name])


async def _take(backend: KeyBackend, ksid: str, count: int, timeout: float,
                out: list[tuple[int, str]]) -> None:
    for _ in range(count):
        chunk = await backend.get_key(ksid, timeout)
        out.append((chunk.index, hashlib.sha256(chunk.key).hexdigest()))


async def run_app_stream(net, client: str, server: str, name: str, *, keys: int = 16,
                         chunk_bits: int = 256, timeout: float = 10.0) -> dict[str, Any]:
    """One client/server application pair across ``net`` (an EmbeddedNetwork)."""
    result: dict[str, Any] = {"client": client, "server": server, "name": name, "keys": 0,
                              "identical": False, "status": "SUCCESSFUL"}
    at_client, at_server = net.transports[client], net.transports[server]
    try:
        at_server.backend.register(name)
        with trio.fail_after(timeout):
            while at_client.directory.resolve(name) is None:
                await trio.sleep(0.05)
        ksids: dict[str, str] = {}

        async def accept() -> None:
            ksids["server"] = await at_server.backend.accept(name, timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            ksids["client"] = await at_client.backend.open_connect(
                name, Qos(key_chunk_size=chunk_bits, timeout_s=timeout))
        got_client: list[tuple[int, str]] = []
        got_server: list[tuple[int, str]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_take, at_client.backend, ksids["client"], keys, timeout,
                               got_client)
            nursery.start_soon(_take, at_server.backend, ksids["server"], keys, timeout,
                               got_server)
        await at_client.backend.close(ksids["client"])
        result.update(ksid=ksids["client"], keys=len(got_client),
                      identical=ksids["client"] == ksids["server"] and got_client == got_server)
    except ApiError as error:
        result["status"] = error.status.name
    except trio.TooSlowError:
        result["status"] = "TIMEOUT"
    return result


async def run_app_streams(net, pairs: Sequence[tuple[str, str]], *, keys: int = 16,
                          chunk_bits: int = 256, timeout: float = 10.0) -> dict[str, Any]:
    """Every pair at once; a summary for the run's JSON."""
    results: list[dict[str, Any]] = []

    async def one(index: int, client: str, server: str) -> None:
        results.append(await run_app_stream(net, client, server, f"demo-{server}-{index}",
                                            keys=keys, chunk_bits=chunk_bits, timeout=timeout))
    async with trio.open_nursery() as nursery:
        for index, (client, server) in enumerate(pairs):
            nursery.start_soon(one, index, client, server)
    failures = Counter(r["status"] for r in results if r["status"] != "SUCCESSFUL")
    return {"app_streams": len(results),
            "app_keys": sum(r["keys"] for r in results if r["identical"]),
            "app_key_bits": chunk_bits * sum(r["keys"] for r in results if r["identical"]),
            "app_keys_identical": all(r["identical"] for r in results) if results else None,
            "app_failures": dict(sorted(failures.items()))}
