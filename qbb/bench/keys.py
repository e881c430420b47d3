"""``qbb bench keys``: end-to-end key delivery to applications (issue: QKDTL transport).

Method.  An embedded network (one process, real time) on a line of 2 nodes (1 hop) or
4 nodes (3 hops), links with emulated QKD devices of ``LINK_RATE`` bit/s each and Q3P
MTU ``MTU``.  A server application registers at the last node, a client application at
the first node connects to it, and both fetch keys through their nodes' key API over
loopback TCP (:class:`qbb.client.AsyncKeyClient`, GET_KEY with ``count``), for a fixed
window after a warm-up.  Each key is compared index by index at both ends (SHA-256).

Metrics per case: keys/s (256-bit keys) or Mb/s (1 MB of key per request, in 65,528-bit
chunks), counted once per end-to-end key (both applications hold it); the key
efficiency of the Q-RoKR paper's eq. 7, key_out / key_in, with key_in the link key
bits the stores handed out in the window (one-time pads, one-time MACs, every frame of
every protocol; the ideal for relaying over h hops is 1/h); and each link's share,
application key bits / (window x the link's key rate).
"""

from __future__ import annotations

import hashlib
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


async def _fetch(client: AsyncKeyClient, ksid: str, per_call: int, until: float,
                 out: dict[int, str]) -> None:
    while trio.current_time() < until:
        for chunk in await client.get_keys(ksid, per_call, timeout_s=5.0):
            out[chunk.index] = hashlib.sha256(chunk.key).hexdigest()


async def _case(hops: int, bits: int, per_call: int, window: float) -> dict:
    topology = line(hops)
    net = EmbeddedNetwork(topology, key_api_port=0,
                          transport_config=ConnectionConfig(mss=MSS, buffer_bits=16 << 20))
    first, last = topology.nodes[0].name, topology.nodes[-1].name
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        if await net.wait_converged(timeout=30) is None:
            raise RuntimeError("bench network did not converge")
        ports = {name: driver.key_api.port for name, driver in net.transports.items()}
        async with AsyncKeyClient(port=ports[first]) as client, \
                AsyncKeyClient(port=ports[last]) as server:
            await server.register("bench")
            with trio.fail_after(10):
                while net.transports[first].directory.resolve("bench") is None:
                    await trio.sleep(0.05)
            ksids = {}

            async def accept() -> None:
                ksids["server"] = await server.accept("bench", timeout_s=10)
            async with trio.open_nursery() as inner:
                inner.start_soon(accept)
                ksids["client"] = await client.open_connect(
                    "bench", Qos(key_chunk_size=bits, timeout_s=10))
            got_c: dict[int, str] = {}
            got_s: dict[int, str] = {}
            async with trio.open_nursery() as inner:  # warm-up
                until = trio.current_time() + min(1.0, window / 4)
                inner.start_soon(_fetch, client, ksids["client"], per_call, until, got_c)
                inner.start_soon(_fetch, server, ksids["server"], per_call, until, got_s)
            keys_before, used_before = min(len(got_c), len(got_s)), _consumed(net)
            start = trio.current_time()
            async with trio.open_nursery() as inner:
                until = start + window
                inner.start_soon(_fetch, client, ksids["client"], per_call, until, got_c)
                inner.start_soon(_fetch, server, ksids["server"], per_call, until, got_s)
            elapsed, used = trio.current_time() - start, _consumed(net) - used_before
            common = sorted(set(got_c) & set(got_s))
            identical = all(got_c[i] == got_s[i] for i in common)
            await client.close(ksids["client"])
        nursery.cancel_scope.cancel()
    keys = len(common) - keys_before
    return {"keys": keys, "bits": keys * bits, "elapsed": elapsed, "used": used,
            "identical": identical and ksids["client"] == ksids["server"],
            "reuse": net.key_reuse_detected()}


def _rows(case: str, hops: int, bits: int, m: dict) -> Iterator[Result]:
    common = {"identical": m["identical"], "key_reuse_detected": m["reuse"], "hops": hops,
              "link_rate_bps": LINK_RATE, "window_s": round(m["elapsed"], 3)}
    if bits == CHUNK_BITS:
        yield Result("keys", case, "throughput", m["bits"] / m["elapsed"] / 1e6, "Mb/s", common)
    else:
        yield Result("keys", case, "rate", m["keys"] / m["elapsed"], "keys/s", common)
    efficiency = m["bits"] / m["used"] if m["used"] else 0.0
    yield Result("keys", case, "key_efficiency", efficiency, "ratio",
                 {**common, "ideal": 1 / hops, "key_in_bits": m["used"],
                  "key_out_bits": m["bits"]})
    yield Result("keys", case, "link_share", m["bits"] / (m["elapsed"] * LINK_RATE), "ratio",
                 common)


def run(quick: bool = False) -> Iterator[Result]:
    window = 2.0 if quick else 6.0
    for hops in (1, 3):
        for label, bits, per_call in (("256bit", 256, 256), ("1MB", CHUNK_BITS, MEGABYTE_CHUNKS)):
            measured = trio.run(_case, hops, bits, per_call, window)
            yield from _rows(f"{hops}hop/{label}", hops, bits, measured)
