"""The application key API server: JSON lines over TCP in front of a :class:`KeyBackend`.

Theory of operation.  SECOQC seed 002 §3.4 (Figs. 15-16) has every application reach its
QBB node over a conventional TCP connection; this is the node's end of it.  Each
accepted TCP session reads request lines (:mod:`qbb.keyapi.protocol`), calls the
node's :class:`~qbb.keyapi.model.KeyBackend` (the QKDTL transport service) and writes
one answer line per request, in order.  Sessions run concurrently, at most
``max_sessions`` (256) at a time; one more is answered ``INTERNAL_ERROR`` ("busy") and
closed.  Registrations and key streams belong to the node, not to a session, so a
command-line tool can register in one session and accept in the next.

Nothing a peer sends can stop the server (the rule of shared/DESIGN.md: no exception
from the wire reaches a nursery):

* a line that does not decode is answered ``BAD_REQUEST`` naming the field, and the
  session goes on; a line over 64 KiB is answered ``BAD_REQUEST`` and ends the session
  (the stream cannot be resynchronised); a peer that disconnects ends its session;
* an :class:`~qbb.keyapi.model.ApiError` from the backend becomes its status and
  reason; any other exception becomes ``INTERNAL_ERROR`` and a log line;
* a backend that overstays a call's own timeout by more than ``GRACE_S`` is cancelled
  and the call answered ``TIMEOUT``;
* a peer that closes its connection (even only its sending side) while an
  OPEN_CONNECT, ACCEPT or GET_KEY of its is waiting is taken as gone: the call is
  cancelled, so no connection and no key is handed to an application that is no longer
  there (an abandoned ACCEPT would otherwise take the next client's connection).

``GET_KEY`` with ``count`` > 1 asks the backend for keys one by one within the one
``timeout_s``; when the stream runs dry or the time is up after at least one key, the
answer is ``SUCCESSFUL`` with the keys obtained (fewer than asked), so a key taken from
the stream is never lost.  Every outcome is counted in :attr:`KeyApiServer.counters`.
Key bytes are never logged.  The server listens on loopback unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from typing import Any

import trio

from qbb.errors import DecodeError, EncodeError
from qbb.keyapi.model import ApiError, KeyBackend, Status
from qbb.keyapi.protocol import (
    MAX_REQUEST_LINE, AcceptRequest, CloseRequest, GetKeyRequest, LineBuffer,
    OpenConnectRequest, RegisterRequest, Request, Response, StatusRequest,
    UnregisterRequest, decode_request, encode_response, failure, request_id_of,
)

__all__ = ["DEFAULT_MAX_SESSIONS", "GRACE_S", "KeyApiServer", "serve_key_api"]

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 256
GRACE_S = 1.0
_RECEIVE_BYTES = 65536
_OK = Status.SUCCESSFUL
_WAITING = (OpenConnectRequest, AcceptRequest, GetKeyRequest)


class KeyApiServer:
    """Serves one node's key API; ``port`` is known once :meth:`serve` has started."""

    def __init__(self, backend: KeyBackend, *, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.backend = backend
        self.max_sessions = max_sessions
        self.port: int | None = None
        self.active_sessions = 0
        self.counters: Counter[str] = Counter()

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` (0: any free port) and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        if not _is_loopback(host):
            log.warning("key API listening on %s:%d, beyond loopback", host, self.port)
        log.info("key API listening on %s:%d", host, self.port)
        task_status.started(self.port)
        await trio.serve_listeners(self._session, listeners)

    async def _session(self, stream: trio.SocketStream) -> None:
        if self.active_sessions >= self.max_sessions:
            self.counters["sessions_refused"] += 1
            await _send_quietly(stream, failure(
                Status.INTERNAL_ERROR, f"node busy: {self.max_sessions} key API sessions open"))
            return
        self.active_sessions += 1
        self.counters["sessions"] += 1
        try:
            await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.counters["disconnects"] += 1
        except Exception:   # noqa: BLE001 - a session never takes the server down
            self.counters["session_errors"] += 1
            log.exception("key API session ended by an unexpected error")
        finally:
            self.active_sessions -= 1
            await trio.aclose_forcefully(stream)

    async def _converse(self, stream: trio.SocketStream) -> None:
        inbox = _Inbox()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, stream, inbox)
            await self._answer_lines(stream, inbox)
            nursery.cancel_scope.cancel()

    async def _read(self, stream: trio.SocketStream, inbox: _Inbox) -> None:
        """Fill ``inbox`` from the peer; on EOF cancel the call waiting for this peer."""
        while True:
            while inbox.lines.pending() > MAX_REQUEST_LINE:   # let TCP push back
                await inbox.taken.wait()
            data = await stream.receive_some(_RECEIVE_BYTES)
            if not data:
                inbox.eof = True
                if inbox.call_scope is not None:
                    self.counters["hangups"] += 1
                    inbox.call_scope.cancel()
                inbox.arrived.fire()
                return
            inbox.lines.feed(data)
            inbox.arrived.fire()

    async def _answer_lines(self, stream: trio.SocketStream, inbox: _Inbox) -> None:
        while True:
            try:
                line = inbox.lines.next_line()
            except DecodeError as error:
                self.counters["oversize_lines"] += 1
                await stream.send_all(encode_response(failure(Status.BAD_REQUEST, str(error))))
                return
            if line is None and not inbox.eof:
                await inbox.arrived.wait()
                continue
            if line is None:   # peer closed; answer an unterminated last line if any
                line = inbox.lines.rest()
                if line.strip() and (answer := await self._answer(line, inbox)):
                    await stream.send_all(answer)
                return
            inbox.taken.fire()
            answer = await self._answer(line, inbox)
            if answer is None:   # the peer went away while its call was waiting
                return
            await stream.send_all(answer)

    async def _answer(self, line: bytes, inbox: _Inbox) -> bytes | None:
        request = self._decode(line)
        if isinstance(request, bytes) or not isinstance(request, _WAITING):
            return await self.handle_line(line, request)
        answer = None
        with trio.CancelScope() as inbox.call_scope:
            if inbox.eof:
                self.counters["hangups"] += 1
                inbox.call_scope.cancel()
            answer = self._encode(await self.handle(request))
        inbox.call_scope = None
        return answer

    async def handle_line(self, line: bytes, decoded: Request | bytes | None = None) -> bytes:
        """The answer line to one request line, without a session (never raises but for
        cancellation); ``decoded`` is :meth:`_decode`'s result if already at hand."""
        request = self._decode(line) if decoded is None else decoded
        if isinstance(request, bytes):
            return request
        return self._encode(await self.handle(request))

    def _decode(self, line: bytes) -> Request | bytes:
        """The request of ``line``, or the BAD_REQUEST answer line if it does not decode."""
        self.counters["requests"] += 1
        try:
            return decode_request(line)
        except DecodeError as error:
            self.counters["bad_requests"] += 1
            return self._encode(failure(Status.BAD_REQUEST, str(error), request_id_of(line)))

    async def handle(self, request: Request) -> Response:
        """Call the backend for ``request``; every failure becomes a status."""
        try:
            response = await self._call(request)
        except ApiError as error:
            self.counters[f"status_{error.status.name}"] += 1
            return failure(error.status, error.reason, request.request_id)
        except Exception as error:   # noqa: BLE001 - reported to the caller as a status
            self.counters["internal_errors"] += 1
            log.exception("key API: %s failed inside the node", request.op)
            return failure(Status.INTERNAL_ERROR, f"{request.op} failed inside the node "
                           f"({type(error).__name__}); see the node's log", request.request_id)
        self.counters[f"ok_{request.op}"] += 1
        return response

    async def _call(self, request: Request) -> Response:
        rid, backend = request.request_id, self.backend
        match request:
            case RegisterRequest(name=name):
                return Response(_OK, request_id=rid, port=backend.register(name))
            case UnregisterRequest(name=name):
                backend.unregister(name)
                return Response(_OK, request_id=rid)
            case OpenConnectRequest(destination=destination, qos=qos):
                ksid = await _bounded(qos.timeout_s, backend.open_connect, destination, qos)
                return Response(_OK, request_id=rid, ksid=ksid)
            case AcceptRequest(name=name, timeout_s=timeout_s):
                ksid = await _bounded(timeout_s, backend.accept, name, timeout_s)
                return Response(_OK, request_id=rid, ksid=ksid)
            case GetKeyRequest():
                return await self._get_keys(request)
            case CloseRequest(ksid=ksid):
                await _bounded(10.0, backend.close, ksid)
                return Response(_OK, request_id=rid)
            case StatusRequest():
                return Response(_OK, request_id=rid, node=self._node_status())
        raise TypeError(f"not a key API request: {type(request).__name__}")

    async def _get_keys(self, request: GetKeyRequest) -> Response:
        deadline = trio.current_time() + request.timeout_s
        keys = []
        for _ in range(request.count):
            remaining = deadline - trio.current_time()
            try:
                if remaining <= 0:
                    raise ApiError(Status.TIMEOUT, f"no key within {request.timeout_s:g} s")
                keys.append(await _bounded(remaining, self.backend.get_key, request.ksid,
                                           remaining))
            except ApiError:
                if not keys:
                    raise
                self.counters["short_get_key"] += 1
                break
        return Response(_OK, request_id=request.request_id, ksid=request.ksid, keys=tuple(keys))

    def _node_status(self) -> dict[str, Any]:
        node = dict(self.backend.status())
        node["key_api"] = {"port": self.port, "active_sessions": self.active_sessions,
                           **dict(sorted(self.counters.items()))}
        return node

    def _encode(self, response: Response) -> bytes:
        try:
            return encode_response(response)
        except EncodeError as error:
            self.counters["internal_errors"] += 1
            log.error("key API: the node's answer cannot be encoded: %s", error)
            return encode_response(failure(Status.INTERNAL_ERROR, "the node's answer cannot be "
                                           f"encoded ({error.field})", response.request_id))


class _Signal:
    """Wakes every task waiting at the time of :meth:`fire`."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class _Inbox:
    """What a session's reader task shares with its answering task."""

    def __init__(self) -> None:
        self.lines = LineBuffer(MAX_REQUEST_LINE)
        self.eof = False
        self.call_scope: trio.CancelScope | None = None   # a waiting call in progress
        self.arrived, self.taken = _Signal(), _Signal()


async def _bounded(timeout_s: float, call: Any, *args: Any) -> Any:
    """``await call(*args)``, cancelled with TIMEOUT ``GRACE_S`` after its own timeout."""
    with trio.move_on_after(timeout_s + GRACE_S):
        return await call(*args)
    raise ApiError(Status.TIMEOUT, f"the node did not answer within {timeout_s:g} s")


async def _send_quietly(stream: trio.SocketStream, response: Response) -> None:
    """Send a last answer, half-close, and read what the peer still sends (at most 1 s):
    closing with unread input would reset the connection (RFC 1122 §4.2.2.13) and the
    peer could lose the answer."""
    try:
        with trio.move_on_after(1.0):
            await stream.send_all(encode_response(response))
            await stream.send_eof()
            while await stream.receive_some(1 << 16):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve_key_api(backend: KeyBackend, host: str = "127.0.0.1", port: int = 0, *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``backend``'s key API on ``host:port``; ``task_status.started(actual_port)``."""
    await KeyApiServer(backend).serve(host, port, task_status=task_status)
