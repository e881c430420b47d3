"""An in-memory :class:`qbb.keyapi.model.KeyBackend` for the key API tests.

A :class:`FakeNetwork` is shared by several :class:`FakeNode` backends (one per QBB
node); a key stream lives in the network, so the key taken at index ``i`` by one end has
the same bytes as the key ``i`` taken by the other end (keys are made on first demand
from a shared pool of ``key_bits``).  Knobs for the failure paths: :meth:`FakeNetwork.cut`
(no route between two nodes), ``key_bits`` (insufficient key), ``guaranteed_bps``
(QoS not met), :meth:`FakeNetwork.reset` (peer gone), ``explode`` (an unexpected
exception inside the backend).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import trio

from qbb.keyapi.model import ApiError, KeyChunk, Qos, Status


@dataclass
class _Stream:
    ksid: str
    ends: dict[str, int]          # node name -> next index that end takes
    bits: int
    keys: list[bytes] = field(default_factory=list)
    closed: bool = False


class FakeNetwork:
    """Registrations, routes, key pool and key streams of a whole fake QKD network."""

    def __init__(self, key_bits: int = 10**9, guaranteed_bps: int = 10**6) -> None:
        self.key_bits = key_bits
        self.guaranteed_bps = guaranteed_bps
        self.registry: dict[str, str] = {}          # application name -> node name
        self.streams: dict[str, _Stream] = {}
        self.cuts: set[frozenset[str]] = set()
        self.explode: BaseException | None = None
        self.nodes: dict[str, FakeNode] = {}

    def node(self, name: str) -> "FakeNode":
        return self.nodes.setdefault(name, FakeNode(self, name))

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))

    def reset(self, ksid: str) -> None:
        self.streams[ksid].closed = True

    def add_key(self, bits: int) -> None:
        self.key_bits += bits

    def take_key(self, stream: _Stream, index: int) -> bytes | None:
        while len(stream.keys) <= index:
            if self.key_bits < stream.bits:
                return None
            self.key_bits -= stream.bits
            stream.keys.append(os.urandom((stream.bits + 7) // 8))
        return stream.keys[index]


class FakeNode:
    """One node's :class:`KeyBackend`."""

    def __init__(self, network: FakeNetwork, name: str) -> None:
        self.network, self.name = network, name
        self.ports: dict[str, int] = {}
        self.incoming: dict[str, tuple[trio.MemorySendChannel, trio.MemoryReceiveChannel]] = {}

    def _check(self) -> None:
        if self.network.explode is not None:
            raise self.network.explode

    def register(self, name: str) -> int:
        self._check()
        if name in self.network.registry:
            raise ApiError(Status.NAME_IN_USE, f"{name!r} is registered at {self.network.registry[name]}")
        self.network.registry[name] = self.name
        self.ports[name] = 1024 + len(self.network.registry)
        self.incoming[name] = trio.open_memory_channel(64)
        return self.ports[name]

    def unregister(self, name: str) -> None:
        self._check()
        if name not in self.ports:
            raise ApiError(Status.UNKNOWN_APPLICATION, f"{name!r} is not registered here")
        del self.ports[name], self.incoming[name], self.network.registry[name]

    async def open_connect(self, destination: str, qos: Qos) -> str:
        self._check()
        node_name = self.network.registry.get(destination)
        if node_name is None:
            raise ApiError(Status.UNKNOWN_APPLICATION, f"no application {destination!r}")
        if frozenset((self.name, node_name)) in self.network.cuts:
            raise ApiError(Status.NO_QKD_CONNECTION, f"no route from {self.name} to {node_name}")
        if qos.service == "guaranteed" and qos.rate_bps > self.network.guaranteed_bps:
            raise ApiError(Status.QOS_NOT_MET, f"{qos.rate_bps} b/s exceeds the path's rate")
        stream = _Stream(str(uuid.uuid4()), {self.name: 0}, qos.key_chunk_size)
        self.network.streams[stream.ksid] = stream
        self.network.nodes[node_name].incoming[destination][0].send_nowait(stream)
        return stream.ksid

    async def accept(self, name: str, timeout_s: float) -> str:
        self._check()
        if name not in self.incoming:
            raise ApiError(Status.UNKNOWN_APPLICATION, f"{name!r} is not registered here")
        with trio.move_on_after(timeout_s):
            stream = await self.incoming[name][1].receive()
            stream.ends[self.name] = 0
            return stream.ksid
        raise ApiError(Status.TIMEOUT, f"no connection to {name!r} within {timeout_s:g} s")

    def _stream(self, ksid: str) -> _Stream:
        stream = self.network.streams.get(ksid)
        if stream is None or self.name not in stream.ends:
            raise ApiError(Status.UNKNOWN_KSID, f"no key stream {ksid} here")
        if stream.closed:
            raise ApiError(Status.PEER_GONE, f"key stream {ksid} was closed")
        return stream

    async def get_key(self, ksid: str, timeout_s: float) -> KeyChunk:
        self._check()
        stream = self._stream(ksid)
        with trio.move_on_after(timeout_s):
            while (key := self.network.take_key(stream, stream.ends[self.name])) is None:
                await trio.sleep(0.01)
                self._stream(ksid)
            index = stream.ends[self.name]
            stream.ends[self.name] += 1
            return KeyChunk(ksid, index, stream.bits, key)
        raise ApiError(Status.INSUFFICIENT_KEY, f"no {stream.bits}-bit key within {timeout_s:g} s")

    async def close(self, ksid: str) -> None:
        self._check()
        stream = self.network.streams.get(ksid)
        if stream is None or self.name not in stream.ends:
            raise ApiError(Status.UNKNOWN_KSID, f"no key stream {ksid} here")
        stream.closed = True
        del stream.ends[self.name]

    def status(self) -> dict[str, Any]:
        self._check()
        streams = [s for s in self.network.streams.values() if self.name in s.ends]
        return {"name": self.name, "registrations": sorted(self.ports),
                "streams": len(streams), "open_streams": sum(not s.closed for s in streams)}


async def serve_nodes(nursery: trio.Nursery, network: FakeNetwork, names: str) -> dict[str, Any]:
    """Start a key API server for each node of ``names`` on loopback; name -> server
    (its ``port`` is set)."""
    from qbb.keyapi.server import KeyApiServer

    servers = {}
    for name in names:
        servers[name] = KeyApiServer(network.node(name))
        await nursery.start(servers[name].serve)
    return servers
