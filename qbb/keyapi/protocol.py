"""Wire protocol of the application key API: JSON lines over a local TCP socket.

Theory of operation.  An application talks to its QBB node over one TCP connection
(SECOQC seed 002 §3.4, Figs. 15-16: "the server application must establish a
conventional TCP connection to the corresponding QBB node").  Each request is one line of
UTF-8 JSON (an object with an ``"op"``), each answer one line; answers come back in
request order.  The ops follow SECOQC's three phases and ETSI GS QKD 004's calls:

* registration: ``REGISTER`` / ``UNREGISTER`` a server application's name;
* connection: ``OPEN_CONNECT`` (client side, with a QoS) and ``ACCEPT`` (server side),
  both answered with the key stream id (KSID, a UUID, as in ETSI 004);
* secure communication: ``GET_KEY`` (``count`` keys of the stream, same index and
  bytes at both ends) and ``CLOSE``; ``STATUS`` is a snapshot of the node.

Every answer carries ``status`` (an ETSI 004 status code or qbb's own, see
:class:`qbb.keyapi.model.Status`), its ``status_name`` and on failure a ``reason``.
An optional ``"id"`` (string or integer) is echoed back.

Decoding is strict, so one message has one meaning: exact JSON types (``true`` is not
a number), no duplicate or unknown fields, no NaN/Infinity, names of 1..64 characters
``[A-Za-z0-9._@-]``, KSIDs in canonical lowercase UUID form, a key's base64 length
matching its ``bits``.  :func:`decode_request` / :func:`decode_response` raise only
:class:`qbb.errors.DecodeError` (layer ``"keyapi"``, the offending field, the byte
offset of invalid JSON or 0); the encoders raise :class:`qbb.errors.EncodeError` and
only produce lines their decoder accepts.  :class:`LineBuffer` splits a byte stream
into lines with a length limit (64 KiB for requests, 16 MiB for answers, which may
carry 1024 keys of 65535 bits).  This module is sans-IO: the server and the clients
pump the bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Union

from qbb.errors import DecodeError, EncodeError
from qbb.keyapi.model import KeyChunk, Qos, Status

__all__ = [
    "AcceptRequest", "CloseRequest", "GetKeyRequest", "LineBuffer", "MAX_COUNT",
    "MAX_REQUEST_LINE", "MAX_RESPONSE_LINE", "OpenConnectRequest", "RegisterRequest",
    "Request", "Response", "StatusRequest", "UnregisterRequest", "decode_request",
    "decode_response", "encode_request", "encode_response", "failure", "request_id_of",
]

LAYER = "keyapi"
MAX_REQUEST_LINE = 64 * 1024
MAX_RESPONSE_LINE = 16 * 1024 * 1024
MAX_COUNT = 1024
MAX_TIMEOUT_S = 3600.0
MAX_ID_CHARS = 128
SERVICES = ("best_effort", "guaranteed")
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_REQUIRED = object()
RequestId = Union[str, int, None]


@dataclass(frozen=True)
class RegisterRequest:
    name: str
    request_id: RequestId = None
    op: ClassVar[str] = "REGISTER"


@dataclass(frozen=True)
class UnregisterRequest:
    name: str
    request_id: RequestId = None
    op: ClassVar[str] = "UNREGISTER"


@dataclass(frozen=True)
class OpenConnectRequest:
    destination: str
    qos: Qos = Qos()
    request_id: RequestId = None
    op: ClassVar[str] = "OPEN_CONNECT"


@dataclass(frozen=True)
class AcceptRequest:
    name: str
    timeout_s: float = 10.0
    request_id: RequestId = None
    op: ClassVar[str] = "ACCEPT"


@dataclass(frozen=True)
class GetKeyRequest:
    ksid: str
    timeout_s: float = 10.0
    count: int = 1
    request_id: RequestId = None
    op: ClassVar[str] = "GET_KEY"


@dataclass(frozen=True)
class CloseRequest:
    ksid: str
    request_id: RequestId = None
    op: ClassVar[str] = "CLOSE"


@dataclass(frozen=True)
class StatusRequest:
    request_id: RequestId = None
    op: ClassVar[str] = "STATUS"


Request = Union[RegisterRequest, UnregisterRequest, OpenConnectRequest, AcceptRequest,
                GetKeyRequest, CloseRequest, StatusRequest]
_REQUEST_TYPES = (RegisterRequest, UnregisterRequest, OpenConnectRequest, AcceptRequest,
                  GetKeyRequest, CloseRequest, StatusRequest)


@dataclass(frozen=True)
class Response:
    """One answer; the op-specific fields are ``None`` when absent."""

    status: Status
    reason: str = ""
    request_id: RequestId = None
    port: int | None = None              # REGISTER
    ksid: str | None = None              # OPEN_CONNECT, ACCEPT, GET_KEY
    keys: tuple[KeyChunk, ...] | None = None  # GET_KEY
    node: dict[str, Any] | None = None   # STATUS

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESSFUL


def failure(status: Status, reason: str, request_id: RequestId = None) -> Response:
    """A failed answer."""
    return Response(Status(status), reason, request_id)


def _fail(field: str, reason: str, offset: int = 0) -> None:
    raise DecodeError(LAYER, field, offset, reason)


# --- JSON lines ------------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    _fail("line", f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        _fail(duplicate, "field appears twice")
    return result


def _load_object(data: Any, limit: int) -> dict[str, Any]:
    """The JSON object of one line (an optional trailing newline is allowed)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail("line", f"expected bytes, got {type(data).__name__}")
    data = bytes(data).removesuffix(b"\n")
    if len(data) > limit:
        _fail("line", f"{len(data)} bytes; the limit is {limit}", limit)
    if (newline := data.find(b"\n")) >= 0:
        _fail("line", "a line break inside the message", newline)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        _fail("line", f"not UTF-8: {error.reason}", error.start)
    try:
        value = _JSON_DECODER.decode(text)
    except DecodeError:
        raise
    except json.JSONDecodeError as error:
        _fail("line", f"invalid JSON: {error.msg}", len(text[: error.pos].encode()))
    except (ValueError, RecursionError) as error:   # huge integer literals, deep nesting
        _fail("line", f"unusable JSON: {type(error).__name__}")
    if not isinstance(value, dict):
        _fail("line", f"expected a JSON object, got {type(value).__name__}")
    return value


_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates,
                                 parse_constant=_reject_constant)
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _dump_line(document: dict[str, Any]) -> bytes:
    return _JSON_ENCODER.encode(document).encode() + b"\n"


class LineBuffer:
    """Split a byte stream into lines of at most ``limit`` bytes (without the newline).

    :meth:`next_line` raises :class:`DecodeError` (field ``"line"``) once a line is
    longer than the limit; the stream cannot be resynchronised after that.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_line(self) -> bytes | None:
        """The next complete line, or ``None`` until more bytes arrive."""
        end = self._buffer.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buffer)
            if self._scanned > self.limit:
                _fail("line", f"no line break within {self.limit} bytes", self.limit)
            return None
        if end > self.limit:
            _fail("line", f"line of {end} bytes; the limit is {self.limit}", self.limit)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line

    def pending(self) -> int:
        """How many bytes are buffered."""
        return len(self._buffer)

    def rest(self) -> bytes:
        """The bytes after the last complete line (an unterminated last line)."""
        return bytes(self._buffer)


# --- field readers ---------------------------------------------------------------------


class _Fields:
    """Typed, range-checked access to a JSON object's fields; unknown fields are errors."""

    def __init__(self, document: dict[str, Any], prefix: str = "") -> None:
        self.document, self.prefix, self.used = document, prefix, set()

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key in self.document:
            if self.document[key] is None:
                _fail(self.prefix + key, "null is not allowed; leave the field out")
            return self.document[key]
        if default is _REQUIRED:
            _fail(self.prefix + key, "missing")
        return default

    def _bad(self, key: str, reason: str) -> None:
        _fail(self.prefix + key, reason)

    def integer(self, key: str, low: int, high: int, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if type(value) is not int:
            self._bad(key, f"expected an integer, got {type(value).__name__}")
        if not low <= value <= high:
            self._bad(key, f"{value} is outside {low}..{high}")
        return value

    def seconds(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if type(value) not in (int, float):
            self._bad(key, f"expected a number of seconds, got {type(value).__name__}")
        if not 0 < value <= MAX_TIMEOUT_S:   # also rejects inf (1e400) and huge integers
            self._bad(key, f"{value} is outside 0 < t <= {MAX_TIMEOUT_S:g}")
        return float(value)

    def text(self, key: str, default: Any = _REQUIRED, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if type(value) is not str:
            self._bad(key, f"expected a string, got {type(value).__name__}")
        if choices and value not in choices:
            self._bad(key, f"{value[:40]!r} is not one of {', '.join(choices)}")
        return value

    def name(self, key: str) -> str:
        value = self.text(key)
        if not _NAME.fullmatch(value):
            self._bad(key, "a name is 1..64 characters from A-Z a-z 0-9 . _ @ -")
        return value

    def ksid(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.text(key, default)
        if value is not default and not _is_ksid(value):
            self._bad(key, "a KSID is a UUID in canonical lowercase form")
        return value

    def request_id(self) -> RequestId:
        value = self._get("id", None)
        if value is None or (type(value) is str and len(value) <= MAX_ID_CHARS):
            return value
        if type(value) is int and -(2**63) <= value < 2**63:
            return value
        self._bad("id", f"expected a string of up to {MAX_ID_CHARS} characters or a 64-bit integer")

    def nested(self, key: str, default: Any = _REQUIRED, kind: type = dict) -> Any:
        value = self._get(key, default)
        if value is not default and type(value) is not kind:
            self._bad(key, f"expected a JSON {'object' if kind is dict else 'array'}")
        return value

    def done(self) -> None:
        for key in self.document:
            if key not in self.used:
                _fail(self.prefix + key, "unknown field")


def _is_ksid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# --- requests --------------------------------------------------------------------------


def _qos(document: dict[str, Any]) -> Qos:
    f, default = _Fields(document, "qos."), Qos()
    qos = Qos(key_chunk_size=f.integer("key_chunk_size", 1, 65535, default.key_chunk_size),
              service=f.text("service", default.service, SERVICES),
              rate_bps=f.integer("rate_bps", 0, 2**63 - 1, default.rate_bps),
              burst_bits=f.integer("burst_bits", 0, 2**63 - 1, default.burst_bits),
              timeout_s=f.seconds("timeout_s", default.timeout_s))
    f.done()
    if qos.service == "guaranteed" and qos.rate_bps == 0:
        _fail("qos.rate_bps", "guaranteed service needs rate_bps > 0")
    return qos


_REQUEST_READERS = {
    "REGISTER": lambda f, rid: RegisterRequest(f.name("name"), rid),
    "UNREGISTER": lambda f, rid: UnregisterRequest(f.name("name"), rid),
    "OPEN_CONNECT": lambda f, rid: OpenConnectRequest(
        f.name("destination"), _qos(f.nested("qos", {})), rid),
    "ACCEPT": lambda f, rid: AcceptRequest(f.name("name"), f.seconds("timeout_s"), rid),
    "GET_KEY": lambda f, rid: GetKeyRequest(
        f.ksid("ksid"), f.seconds("timeout_s", 10.0), f.integer("count", 1, MAX_COUNT, 1), rid),
    "CLOSE": lambda f, rid: CloseRequest(f.ksid("ksid"), rid),
    "STATUS": lambda f, rid: StatusRequest(rid),
}


def decode_request(data: bytes) -> Request:
    """One request line (trailing newline optional) -> its request object."""
    f = _Fields(_load_object(data, MAX_REQUEST_LINE))
    op = f.text("op", choices=tuple(_REQUEST_READERS))
    request = _REQUEST_READERS[op](f, f.request_id())
    f.done()
    return request


def encode_request(request: Request) -> bytes:
    """A request object -> one JSON line ending in a newline."""
    if type(request) not in _REQUEST_TYPES:
        raise EncodeError(LAYER, "op", f"not a key API request: {type(request).__name__}")
    document: dict[str, Any] = {"op": request.op}
    for item in fields(request):
        value = getattr(request, item.name)
        if item.name == "request_id":
            if value is not None:
                document["id"] = value
        else:
            document[item.name] = _qos_document(value) if isinstance(value, Qos) else value
    return _checked(_dump_line, document, decode_request)


def _qos_document(qos: Qos) -> dict[str, Any]:
    return {item.name: getattr(qos, item.name) for item in fields(qos)}


def _checked(dump: Any, document: dict[str, Any], decode: Any) -> bytes:
    """Serialise ``document`` and prove the line decodes; EncodeError otherwise."""
    try:
        line = dump(document)
        decode(line)
    except DecodeError as error:
        raise EncodeError(LAYER, error.field, error.reason) from None
    except (TypeError, ValueError) as error:
        raise EncodeError(LAYER, "line", f"not serialisable: {error}") from None
    return line


def request_id_of(data: bytes) -> RequestId:
    """The ``"id"`` of a (possibly invalid) request line if it has a valid one, else None;
    lets a BAD_REQUEST answer still echo the id.  Never raises."""
    try:
        return _Fields(_load_object(data, MAX_REQUEST_LINE)).request_id()
    except DecodeError:
        return None


# --- responses -------------------------------------------------------------------------


def encode_response(response: Response) -> bytes:
    """An answer -> one JSON line ending in a newline."""
    try:
        status = Status(response.status)
    except ValueError:
        raise EncodeError(LAYER, "status", f"unknown status {response.status!r}") from None
    document: dict[str, Any] = {"status": int(status), "status_name": status.name}
    if response.request_id is not None:
        document["id"] = response.request_id
    if response.reason:
        document["reason"] = response.reason
    for key in ("port", "ksid", "node"):
        if getattr(response, key) is not None:
            document[key] = getattr(response, key)
    if response.keys is not None:
        document["keys"] = [_key_document(chunk, response.ksid) for chunk in response.keys]
    return _checked(_dump_line, document, decode_response)


def _key_document(chunk: KeyChunk, ksid: str | None) -> dict[str, Any]:
    if not isinstance(chunk, KeyChunk) or chunk.ksid != ksid:
        raise EncodeError(LAYER, "keys", "every key must be a KeyChunk of the answer's ksid")
    if not isinstance(chunk.key, (bytes, bytearray)):
        raise EncodeError(LAYER, "keys.key", "key material must be bytes")
    return {"index": chunk.index, "bits": chunk.bits,
            "key": base64.b64encode(chunk.key).decode("ascii")}


def decode_response(data: bytes) -> Response:
    """One answer line (trailing newline optional) -> :class:`Response`."""
    f = _Fields(_load_object(data, MAX_RESPONSE_LINE))
    code = f.integer("status", 0, 2**31 - 1)
    if code not in Status._value2member_map_:
        _fail("status", f"unknown status code {code}")
    status = Status(code)
    if f.text("status_name") != status.name:
        _fail("status_name", f"status {code} is named {status.name}")
    response = Response(status, f.text("reason", ""), f.request_id(),
                        f.integer("port", 0, 65535, None), f.ksid("ksid", None),
                        None, f.nested("node", None))
    keys = f.nested("keys", None, list)
    f.done()
    if keys is None:
        return response
    if response.ksid is None:
        _fail("ksid", "missing (an answer with keys names their key stream)")
    if len(keys) > MAX_COUNT:
        _fail("keys", f"{len(keys)} keys; at most {MAX_COUNT}")
    chunks = tuple(_key_chunk(item, index, response.ksid) for index, item in enumerate(keys))
    return Response(response.status, response.reason, response.request_id, response.port,
                    response.ksid, chunks, response.node)


def _key_chunk(item: Any, position: int, ksid: str) -> KeyChunk:
    prefix = f"keys[{position}]."
    if type(item) is not dict:
        _fail(prefix[:-1], "expected a JSON object")
    f = _Fields(item, prefix)
    index, bits, text = f.integer("index", 0, 2**63 - 1), f.integer("bits", 1, 65535), f.text("key")
    f.done()
    try:
        key = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        _fail(prefix + "key", "not valid base64")
    if base64.b64encode(key).decode("ascii") != text:
        _fail(prefix + "key", "base64 not in canonical form")
    if len(key) != (bits + 7) // 8:
        _fail(prefix + "key", f"{len(key)} bytes for {bits} bits")
    return KeyChunk(ksid, index, bits, key)
