"""``qbb bench keys``: end-to-end key delivery to applications (issue: QKDTL transport).

Method.  An embedded network (one process, real time) on a line of 2 nodes (1 hop) or
4 nodes (3 hops), links with emulated QKD devices of ``LINK_RATE`` bit/s each and Q3P
MTU ``MTU``.  A server application registers at the last node, a client application at
the first node connects to it, and both fetch keys through their nodes' key API over
loopback TCP (:class:`qbb.client.AsyncKeyClient`, GET_KEY with ``count``), for a fixed
window after a warm-up.  Each key is compared index by index at both ends (SHA-256).

Each connection's key buffer (``buffer_bits``) holds about two requests (1 Mbit for
256-bit keys, 16 Mbit for 1 MB requests).

Metrics per case: keys/s (256-bit keys) or Mb/s (1 MB of key per request, in 65,528-bit
chunks), counted once per end-to-end key (both applications hold it); the key
efficiency of the Q-RoKR paper's eq. 7, key_out / key_in, with key_in the link key
bits the stores handed out in the window (one-time pads, one-time MACs, every frame of
every protocol; the ideal for relaying over h hops is 1/h) and key_out the key bits the
connection established end to end in the same window (released at the responder's node:
keys drawn into a buffer ahead of the applications count when they cost link key, not
when an application fetches them); and each link's share, application key bits /
(window x the link's key rate).  Every row also gives
``cpu_s``, the process CPU seconds the window took: the whole network runs in this one
process, so on a shared machine rate x window / cpu_s is the figure to compare.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import trio

from qbb.bench import Result
from qbb.client import AsyncKeyClient
from qbb.keyapi.model import Qos
from qbb.network import EmbeddedNetwork
from qbb.topology import LinkSpec, NodeSpec, Topology
from qbb.transport.connection import ConnectionConfig

LINK_RATE = 50e6
MTU = 9000
MSS = 8800
CHUNK_BITS = 65528  # 8,191 bytes: the largest whole-byte key under 65,535 bits
MEGABYTE_CHUNKS = (8 << 20) // CHUNK_BITS + 1  # chunks per 1 MB request


def line(hops: int) -> Topology:
    names = [f"N{i}" for i in range(hops + 1)]
    return Topology(name=f"bench-line{hops + 1}", nodes=tuple(NodeSpec(n, 1) for n in names),
                    links=tuple(LinkSpec(a, b, key_rates_bps=(LINK_RATE,), mtu=MTU)
                                for a, b in zip(names, names[1:])))


def _consumed(net: EmbeddedNetwork) -> int:
    now = net.clock()
    return sum(hw.store.status(now).enc_consumed_bits
               for peers in net.hardware.values() for hw in peers.values())


def _released(net: EmbeddedNetwork, node: str, ksid: str) -> int:
    """Keys the stream ``ksid`` has released at ``node`` (the responder) so far."""
    return net.transports[node].service.streams[ksid].connection.recv.keys.released


async def _fetch(client: AsyncKeyClient, ksid: str, per_call: int, until: float,
                 out: dict[int, str]) -> None:
    while trio.current_time() < until:
        for chunk in await client.get_keys(ksid, per_call, timeout_s=5.0):
            out[chunk.index] = hashlib.sha256(chunk.key).hexdigest()


def buffer_bits(bits: int) -> int:
    """A connection's key buffer: about two requests of the case."""
    return 16 << 20 if bits == CHUNK_BITS else 1 << 20


async def _case(hops: int, bits: int, per_call: int, window: float) -> dict:
    """One case: network up, applications connected, warm-up, the measured window."""
    topology = line(hops)
    net = EmbeddedNetwork(topology, key_api_port=0, transport_config=ConnectionConfig(
        mss=MSS, buffer_bits=buffer_bits(bits)))
    first, last = topology.nodes[0].name, topology.nodes[-1].name
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        if await net.wait_converged(timeout=30) is None:
            raise RuntimeError("bench network did not converge")
        ports = {name: driver.key_api.port for name, driver in net.transports.items()}
        async with AsyncKeyClient(port=ports[first]) as client, \
                AsyncKeyClient(port=ports[last]) as server:
            ksids = await _connect(net, first, client, server, bits)
            pair = ((client, ksids[0], {}), (server, ksids[1], {}))
            await _fetch_both(pair, per_call, min(1.0, window / 4))  # warm-up
            measured = await _window(net, last, pair, per_call, window)
            await client.close(ksids[0])
        nursery.cancel_scope.cancel()
    keys = measured.pop("keys")
    return {"keys": keys, "bits": keys * bits, "established_bits": measured.pop("released")
            * bits, **measured, "identical": measured["identical"] and ksids[0] == ksids[1],
            "reuse": net.key_reuse_detected()}


async def _connect(net: EmbeddedNetwork, first: str, client: AsyncKeyClient,
                   server: AsyncKeyClient, bits: int) -> tuple[str, str]:
    """Register at the server's node, connect from the client's: both ends' KSIDs."""
    await server.register("bench")
    with trio.fail_after(10):
        while net.transports[first].directory.resolve("bench") is None:
            await trio.sleep(0.05)
    accepted: list[str] = []

    async def accept() -> None:
        accepted.append(await server.accept("bench", timeout_s=10))
    async with trio.open_nursery() as inner:
        inner.start_soon(accept)
        ksid = await client.open_connect("bench", Qos(key_chunk_size=bits, timeout_s=10))
    return ksid, accepted[0]


async def _fetch_both(pair, per_call: int, seconds: float) -> None:
    async with trio.open_nursery() as inner:
        until = trio.current_time() + seconds
        for api, ksid, got in pair:
            inner.start_soon(_fetch, api, ksid, per_call, until, got)


async def _window(net: EmbeddedNetwork, last: str, pair, per_call: int, window: float) -> dict:
    """The measured window: keys both ends got, link key used, keys established, CPU."""
    (_, _, got_c), (_, server_ksid, got_s) = pair
    keys, used, released = min(len(got_c), len(got_s)), _consumed(net), \
        _released(net, last, server_ksid)
    start, cpu = trio.current_time(), time.process_time()
    await _fetch_both(pair, per_call, window)
    out = {"elapsed": trio.current_time() - start, "cpu": time.process_time() - cpu,
           "used": _consumed(net) - used,
           "released": _released(net, last, server_ksid) - released}
    common = sorted(set(got_c) & set(got_s))
    return {**out, "keys": len(common) - keys,
            "identical": all(got_c[i] == got_s[i] for i in common)}


def _rows(case: str, hops: int, bits: int, m: dict) -> Iterator[Result]:
    common = {"identical": m["identical"], "key_reuse_detected": m["reuse"], "hops": hops,
              "link_rate_bps": LINK_RATE, "window_s": round(m["elapsed"], 3),
              "cpu_s": round(m["cpu"], 3)}
    if bits == CHUNK_BITS:
        yield Result("keys", case, "throughput", m["bits"] / m["elapsed"] / 1e6, "Mb/s", common)
    else:
        yield Result("keys", case, "rate", m["keys"] / m["elapsed"], "keys/s", common)
    efficiency = m["established_bits"] / m["used"] if m["used"] else 0.0
    yield Result("keys", case, "key_efficiency", efficiency, "ratio",
                 {**common, "ideal": 1 / hops, "key_in_bits": m["used"],
                  "key_out_bits": m["established_bits"]})
    yield Result("keys", case, "link_share", m["bits"] / (m["elapsed"] * LINK_RATE), "ratio",
                 common)


def run(quick: bool = False) -> Iterator[Result]:
    window = 2.0 if quick else 6.0
    for hops in (1, 3):
        for label, bits, per_call in (("256bit", 256, 256), ("1MB", CHUNK_BITS, MEGABYTE_CHUNKS)):
            measured = trio.run(_case, hops, bits, per_call, window)
            yield from _rows(f"{hops}hop/{label}", hops, bits, measured)
