"""The application key service of a node, over QKDTL (SECOQC seed 002 §3.4; ETSI GS QKD 004).

:class:`TransportKeyBackend` implements :class:`qbb.keyapi.model.KeyBackend` on a running
:class:`~qbb.transport.driver.TransportDriver`, following SECOQC's three phases:

* *registration*: :meth:`~TransportKeyBackend.register` gives a server application a
  port (1024-49151) and the directory spreads it network-wide;
* *connection*: :meth:`~TransportKeyBackend.open_connect` resolves the destination
  ("name" through the directory, or "name@A.B.C.D" at one node) and opens a QKDTL
  connection from this node (the initiator, which draws the keys) to the application's
  node; :meth:`~TransportKeyBackend.accept` hands the server the next established
  incoming connection.  Both ends name the connection by the same KSID (a UUID the
  connection core derives from both end points and the initiator's ISN);
* *secure communication*: :meth:`~TransportKeyBackend.get_key` returns the next key of
  the stream.  The connection releases a key at the responder when it arrives in order
  and at the initiator only once the responder acknowledged it, so both applications get
  identical keys with identical indices (``KeyChunk.index`` = the key id), each once.
  :meth:`~TransportKeyBackend.get_keys` hands out several at once (one look-up, one
  wake-up of the driver); a key that is ready is returned without entering the driver's
  wait.

Failures become :class:`~qbb.keyapi.model.ApiError` statuses (docs/transport-service.md):
unknown name -> UNKNOWN_APPLICATION (locally, or by the responder's RST reason byte 1);
no route or ICMP unreachable during setup -> NO_QKD_CONNECTION; guaranteed rate refused
(first link here, ICMP 3/13 from a transit node, RST reason 2/3) -> QOS_NOT_MET; setup not
done within ``qos.timeout_s`` or retries exhausted -> TIMEOUT; closed or reset connection
with no key left -> PEER_GONE; nothing to hand out -> INSUFFICIENT_KEY when asked without
waiting (``timeout_s <= 0``), TIMEOUT after a wait.
"""

from __future__ import annotations

from typing import Any

from qbb.keyapi.model import ApiError, KeyChunk, Qos, Status
from qbb.transport.connection import Role

__all__ = ["TransportKeyBackend"]


class TransportKeyBackend:
    """A :class:`~qbb.keyapi.model.KeyBackend` on one node's transport driver."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.service = driver.service

    # -- registration ----------------------------------------------------------------

    def register(self, name: str) -> int:
        port = self.service.register(name, self.driver.now())
        self.driver.kick()
        return port

    def unregister(self, name: str) -> None:
        self.service.unregister(name, self.driver.now())
        self.driver.kick()

    # -- connection ------------------------------------------------------------------

    async def open_connect(self, destination: str, qos: Qos) -> str:
        stream = self.service.connect(destination, qos, self.driver.now())
        self.driver.kick()
        try:
            done = await self.driver.wait_until(lambda: stream.established or stream.ended,
                                                qos.timeout_s)
        except BaseException:
            self.service.abort(stream, self.driver.now(), "connect cancelled")
            self.driver.kick()
            raise
        if stream.established:
            return stream.ksid
        if not done:
            self.service.abort(stream, self.driver.now(), "connect timeout")
            self.driver.kick()
            raise ApiError(Status.TIMEOUT, f"no answer from {destination!r} within "
                           f"{qos.timeout_s} s")
        raise ApiError(stream.failure or Status.PEER_GONE,
                       f"connect to {destination!r}: {stream.reason}")

    async def accept(self, name: str, timeout_s: float) -> str:
        if name not in self.service.registrations:
            raise ApiError(Status.UNKNOWN_APPLICATION, f"{name!r} is not registered here")
        found: list = []

        def arrived() -> bool:
            if name not in self.service.registrations:
                return True
            stream = self.service.accept_next(name)
            if stream is not None:
                found.append(stream)
            return bool(found)

        await self.driver.wait_until(arrived, timeout_s)
        if found:
            return found[0].ksid
        if name not in self.service.registrations:
            raise ApiError(Status.UNKNOWN_APPLICATION, f"{name!r} was unregistered")
        raise ApiError(Status.TIMEOUT, f"no connection to {name!r} within {timeout_s} s")

    # -- secure communication --------------------------------------------------------

    def _stream(self, ksid: str):
        stream = self.service.streams.get(ksid)
        if stream is None:
            raise ApiError(Status.UNKNOWN_KSID, f"no open key stream {ksid!r} at this node")
        return stream

    async def get_key(self, ksid: str, timeout_s: float) -> KeyChunk:
        return (await self.get_keys(ksid, 1, timeout_s))[0]

    async def get_keys(self, ksid: str, count: int, timeout_s: float) -> list[KeyChunk]:
        """Up to ``count`` keys of stream ``ksid`` (at least one; waits up to ``timeout_s``
        for the first only): one look-up and one wake-up of the driver for the batch."""
        stream = self._stream(ksid)
        connection = stream.connection
        if not connection.keys_available() and not stream.ended:
            await self.driver.wait_until(
                lambda: connection.keys_available() > 0 or stream.ended, timeout_s)
        if connection.keys_available() > 0:
            keys = connection.take_keys(max(1, count))
            self.driver.kick()  # the freed buffer may open the window
            return [KeyChunk(ksid, key.key_id, key.key_bits, key.key) for key in keys]
        if stream.ended:
            raise ApiError(Status.PEER_GONE, f"key stream {ksid} ended: {stream.reason}")
        if timeout_s <= 0:
            raise ApiError(Status.INSUFFICIENT_KEY, f"no key ready on {ksid}")
        raise ApiError(Status.TIMEOUT, f"no key on {ksid} within {timeout_s} s")

    async def close(self, ksid: str) -> None:
        stream = self._stream(ksid)
        self.service.close(stream, self.driver.now())
        self.driver.kick()

    # -- observation -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        service = self.service
        streams = {}
        for ksid, stream in service.streams.items():
            streams[ksid] = {"role": stream.role.value, "application": stream.application,
                             "remote": stream.key[1], "ended": stream.ended,
                             "keys_ready": stream.connection.keys_available()}
        initiators = sum(s.role is Role.INITIATOR for s in service.streams.values())
        return {"address": service.address, "registrations": dict(service.registrations),
                "directory": service.directory.names(), "streams": streams,
                "initiated": initiators, "counters": dict(service.counters),
                "drops": dict(service.drops)}
