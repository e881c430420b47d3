"""Client library of the application key API (SECOQC seed 002 §3.4, ETSI GS QKD 004 calls).

Theory of operation.  An application holds one TCP connection to its QBB node's key API
(:mod:`qbb.keyapi.server`) and sends one JSON request line per call
(:mod:`qbb.keyapi.protocol`), waiting for the answer line before the next call.  The
three SECOQC phases map to calls as follows::

    server application                     client application
    port = c.register("bob")               (registration, known network-wide)
    ksid = c.accept("bob")     <-------->  ksid = c.open_connect("bob", key_chunk_size=256)
    key = c.get_key(ksid)                  key = c.get_key(ksid)   # same index, same bytes
    c.close(ksid)

:class:`KeyClient` is blocking (plain sockets, for scripts and the ``qbb key`` command);
:class:`AsyncKeyClient` has the same methods as coroutines (trio, for tests and
benchmarks; its calls are serialised on its one connection).  The connection opens on
first use and is reopened after an error.  A non-zero status raises
:class:`~qbb.keyapi.model.ApiError` (``status``, ``reason``); a node that cannot be
reached, stops answering or answers garbage raises :class:`KeyApiConnectionError`.
``timeout`` bounds connecting and each answer; calls that wait by design (ACCEPT,
OPEN_CONNECT, GET_KEY) get their own ``timeout_s`` on top.  Every request carries an
increasing ``id`` which the answer must echo.
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
from typing import Any

import trio

from qbb.errors import DecodeError, QbbError
from qbb.keyapi.model import ApiError, KeyChunk, Qos, Status
from qbb.keyapi.protocol import (
    MAX_RESPONSE_LINE, AcceptRequest, CloseRequest, GetKeyRequest, LineBuffer,
    OpenConnectRequest, RegisterRequest, Request, Response, StatusRequest,
    UnregisterRequest, decode_response, encode_request,
)

__all__ = ["ApiError", "AsyncKeyClient", "DEFAULT_PORT", "KeyApiConnectionError", "KeyClient",
           "Qos", "Status"]

DEFAULT_PORT = 7400
_RECEIVE_BYTES = 65536


class KeyApiConnectionError(QbbError):
    """The key API could not be reached, stopped answering or answered garbage."""


def _unreachable(host: str, port: int, error: OSError) -> KeyApiConnectionError:
    why = error.strerror or type(error).__name__
    return KeyApiConnectionError(
        f"cannot reach the key API at {host}:{port} ({why}); is a node's key API listening "
        f"there? start one with `qbb run ... --key-api PORT`")


def _make_qos(qos: Qos | None, fields: dict[str, Any]) -> Qos:
    return dataclasses.replace(qos or Qos(), **fields)


def _waits(request: Request) -> float:
    """How long the node may take by design to answer ``request``."""
    if isinstance(request, OpenConnectRequest):
        return request.qos.timeout_s
    return getattr(request, "timeout_s", 0.0)


class _Base:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._ids = itertools.count(1)

    def _stamp(self, request: Request) -> Request:
        return dataclasses.replace(request, request_id=next(self._ids))

    def _answer(self, line: bytes, request: Request) -> Response:
        try:
            response = decode_response(line)
        except DecodeError as error:
            raise self._broken(f"sent an invalid answer ({error})") from None
        if response.request_id != request.request_id:
            raise self._broken(f"answered id {response.request_id!r} to id {request.request_id!r}")
        if not response.ok:
            raise ApiError(response.status, response.reason)
        return response

    def _broken(self, what: str) -> KeyApiConnectionError:
        return KeyApiConnectionError(f"the key API at {self.host}:{self.port} {what}")

    def _no_answer(self, seconds: float) -> KeyApiConnectionError:
        return self._broken(f"did not answer within {seconds:g} s")


class KeyClient(_Base):
    """Blocking key API client; ``with KeyClient(port=7400) as c: ...``."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 timeout: float = 30.0) -> None:
        super().__init__(host, port, timeout)
        self._socket: socket.socket | None = None
        self._lines = LineBuffer(MAX_RESPONSE_LINE)

    def __enter__(self) -> KeyClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.disconnect()

    def connect(self) -> None:
        """Open the connection now (calls open it on demand anyway)."""
        if self._socket is None:
            try:
                self._socket = socket.create_connection((self.host, self.port), self.timeout)
            except OSError as error:
                raise _unreachable(self.host, self.port, error) from None
            self._lines = LineBuffer(MAX_RESPONSE_LINE)

    def disconnect(self) -> None:
        """Close the connection (registrations and key streams stay at the node)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _call(self, request: Request) -> Response:
        request = self._stamp(request)
        line, wait = encode_request(request), self.timeout + _waits(request)
        self.connect()
        try:
            self._socket.settimeout(wait)
            self._socket.sendall(line)
            return self._answer(self._read_line(), request)
        except ApiError:
            raise
        except BaseException as error:   # the connection's state is unknown: start afresh
            self.disconnect()
            if isinstance(error, TimeoutError):
                raise self._no_answer(wait) from None
            if isinstance(error, OSError):
                raise self._broken(f"dropped the connection ({error})") from None
            raise

    def _read_line(self) -> bytes:
        try:
            while (line := self._lines.next_line()) is None:
                data = self._socket.recv(_RECEIVE_BYTES)
                if not data:
                    raise self._broken("closed the connection")
                self._lines.feed(data)
        except DecodeError as error:
            raise self._broken(f"sent an invalid answer ({error})") from None
        return line

    def register(self, name: str) -> int:
        """Register server application ``name`` at this node; its QKDTL port."""
        return self._call(RegisterRequest(name)).port

    def unregister(self, name: str) -> None:
        """Withdraw the registration of ``name``."""
        self._call(UnregisterRequest(name))

    def open_connect(self, destination: str, qos: Qos | None = None, **qos_fields: Any) -> str:
        """Open a key stream to the application registered as ``destination``; its KSID."""
        return self._call(OpenConnectRequest(destination, _make_qos(qos, qos_fields))).ksid

    def accept(self, name: str, timeout_s: float = 10.0) -> str:
        """Wait for the next connection to ``name``; its KSID."""
        return self._call(AcceptRequest(name, timeout_s)).ksid

    def get_key(self, ksid: str, timeout_s: float = 10.0) -> KeyChunk:
        """The next key of stream ``ksid``."""
        return self.get_keys(ksid, 1, timeout_s)[0]

    def get_keys(self, ksid: str, count: int, timeout_s: float = 10.0) -> list[KeyChunk]:
        """Up to ``count`` next keys (at least one; fewer if the stream ran dry in time)."""
        return list(self._call(GetKeyRequest(ksid, timeout_s, count)).keys)

    def close(self, ksid: str) -> None:
        """Close key stream ``ksid`` at both ends."""
        self._call(CloseRequest(ksid))

    def status(self) -> dict[str, Any]:
        """The node's status snapshot."""
        return self._call(StatusRequest()).node or {}


class AsyncKeyClient(_Base):
    """trio key API client; ``async with AsyncKeyClient(port=p) as c: ...``."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 timeout: float = 30.0) -> None:
        super().__init__(host, port, timeout)
        self._stream: trio.SocketStream | None = None
        self._lines = LineBuffer(MAX_RESPONSE_LINE)
        self._lock = trio.Lock()

    async def __aenter__(self) -> AsyncKeyClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.disconnect()

    async def connect(self) -> None:
        """Open the connection now (calls open it on demand anyway)."""
        if self._stream is None:
            try:
                with trio.fail_after(self.timeout):
                    self._stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError as error:
                raise _unreachable(self.host, self.port, error) from None
            except trio.TooSlowError:
                raise self._no_answer(self.timeout) from None
            self._lines = LineBuffer(MAX_RESPONSE_LINE)

    async def disconnect(self) -> None:
        """Close the connection (registrations and key streams stay at the node)."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await trio.aclose_forcefully(stream)

    async def _call(self, request: Request) -> Response:
        async with self._lock:
            request = self._stamp(request)
            line, wait = encode_request(request), self.timeout + _waits(request)
            await self.connect()
            try:
                with trio.fail_after(wait):
                    await self._stream.send_all(line)
                    return self._answer(await self._read_line(), request)
            except ApiError:
                raise
            except BaseException as error:   # the connection's state is unknown: start afresh
                await self.disconnect()
                if isinstance(error, trio.TooSlowError):
                    raise self._no_answer(wait) from None
                if isinstance(error, (trio.BrokenResourceError, trio.ClosedResourceError)):
                    raise self._broken("dropped the connection") from None
                raise

    async def _read_line(self) -> bytes:
        try:
            while (line := self._lines.next_line()) is None:
                data = await self._stream.receive_some(_RECEIVE_BYTES)
                if not data:
                    raise self._broken("closed the connection")
                self._lines.feed(data)
        except DecodeError as error:
            raise self._broken(f"sent an invalid answer ({error})") from None
        return line

    async def register(self, name: str) -> int:
        """Register server application ``name`` at this node; its QKDTL port."""
        return (await self._call(RegisterRequest(name))).port

    async def unregister(self, name: str) -> None:
        """Withdraw the registration of ``name``."""
        await self._call(UnregisterRequest(name))

    async def open_connect(self, destination: str, qos: Qos | None = None,
                           **qos_fields: Any) -> str:
        """Open a key stream to the application registered as ``destination``; its KSID."""
        return (await self._call(OpenConnectRequest(destination, _make_qos(qos, qos_fields)))).ksid

    async def accept(self, name: str, timeout_s: float = 10.0) -> str:
        """Wait for the next connection to ``name``; its KSID."""
        return (await self._call(AcceptRequest(name, timeout_s))).ksid

    async def get_key(self, ksid: str, timeout_s: float = 10.0) -> KeyChunk:
        """The next key of stream ``ksid``."""
        return (await self.get_keys(ksid, 1, timeout_s))[0]

    async def get_keys(self, ksid: str, count: int, timeout_s: float = 10.0) -> list[KeyChunk]:
        """Up to ``count`` next keys (at least one; fewer if the stream ran dry in time)."""
        return list((await self._call(GetKeyRequest(ksid, timeout_s, count))).keys)

    async def close(self, ksid: str) -> None:
        """Close key stream ``ksid`` at both ends."""
        await self._call(CloseRequest(ksid))

    async def status(self) -> dict[str, Any]:
        """The node's status snapshot."""
        return (await self._call(StatusRequest())).node or {}
