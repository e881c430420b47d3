"""Key API wire protocol: round trips, strict decoding, line splitting (qbb.keyapi.protocol)."""

import json
import uuid

import pytest
from hypothesis import given, strategies as st

from qbb.errors import DecodeError, EncodeError
from qbb.keyapi.model import KeyChunk, Qos, Status
from qbb.keyapi.protocol import (
    MAX_REQUEST_LINE, AcceptRequest, CloseRequest, GetKeyRequest, LineBuffer,
    OpenConnectRequest, RegisterRequest, Response, StatusRequest, UnregisterRequest,
    decode_request, decode_response, encode_request, encode_response, failure, request_id_of,
)

names = st.text("abcXYZ019._@-", min_size=1, max_size=64)
ksids = st.uuids().map(str)
seconds = st.floats(min_value=0.001, max_value=3600.0)
ids = st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=128)
qos = st.builds(Qos, key_chunk_size=st.integers(1, 65535),
                service=st.just("best_effort"), rate_bps=st.integers(0, 2**40),
                burst_bits=st.integers(0, 2**40), timeout_s=seconds) | st.builds(
    Qos, service=st.just("guaranteed"), rate_bps=st.integers(1, 2**40))
requests = st.one_of(
    st.builds(RegisterRequest, names, ids), st.builds(UnregisterRequest, names, ids),
    st.builds(OpenConnectRequest, names, qos, ids), st.builds(AcceptRequest, names, seconds, ids),
    st.builds(GetKeyRequest, ksids, seconds, st.integers(1, 1024), ids),
    st.builds(CloseRequest, ksids, ids), st.builds(StatusRequest, ids))


@st.composite
def key_answers(draw):
    ksid, bits = draw(ksids), draw(st.integers(1, 65535))
    chunks = tuple(KeyChunk(ksid, i, bits, draw(st.binary(min_size=(bits + 7) // 8,
                                                          max_size=(bits + 7) // 8)))
                   for i in range(draw(st.integers(1, 3))))
    return Response(Status.SUCCESSFUL, request_id=draw(ids), ksid=ksid, keys=chunks)


responses = st.one_of(
    key_answers(),
    st.builds(failure, st.sampled_from([s for s in Status if s]), st.text(min_size=1), ids),
    st.builds(Response, st.just(Status.SUCCESSFUL), port=st.integers(0, 65535)),
    st.builds(Response, st.just(Status.SUCCESSFUL), ksid=ksids),
    st.builds(Response, st.just(Status.SUCCESSFUL),
              node=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5))))


@given(requests)
def test_request_round_trip(request):
    line = encode_request(request)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_request(line) == request
    assert decode_request(line[:-1]) == request


@given(responses)
def test_response_round_trip(response):
    assert decode_response(encode_response(response)) == response


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_decode_error(data):
    for decode in (decode_request, decode_response):
        try:
            decode(data)
        except DecodeError as error:
            assert error.layer == "keyapi" and error.field and error.offset >= 0


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["op", "name", "ksid", "qos", "id",
                                                       "count", "timeout_s", "keys", "status"]),
                                      inner, max_size=4), max_leaves=12),
       st.sampled_from(["REGISTER", "OPEN_CONNECT", "GET_KEY", "ACCEPT", "STATUS"]))
def test_random_json_raises_only_decode_error(value, op):
    document = dict(value, op=op) if isinstance(value, dict) else value
    for decode in (decode_request, decode_response):
        try:
            decode(json.dumps(document).encode())
        except DecodeError as error:
            assert error.layer == "keyapi"


KSID = str(uuid.uuid4())
BAD_REQUESTS = [
    (b'{"op":"REGISTER","name":"a",}', "line"),
    (b'[1,2]', "line"),
    (b'"REGISTER"', "line"),
    (b'{"op":"FLY"}', "op"),
    (b'{"name":"a"}', "op"),
    (b'{"op":"REGISTER"}', "name"),
    (b'{"op":"REGISTER","name":""}', "name"),
    (b'{"op":"REGISTER","name":"' + b"a" * 65 + b'"}', "name"),
    (b'{"op":"REGISTER","name":"a b"}', "name"),
    (b'{"op":"REGISTER","name":7}', "name"),
    (b'{"op":"REGISTER","name":"a","extra":1}', "extra"),
    (b'{"op":"REGISTER","name":"a","name":"b"}', "name"),
    (b'{"op":"STATUS","id":null}', "id"),
    (b'{"op":"STATUS","id":true}', "id"),
    (b'{"op":"STATUS","id":1.5}', "id"),
    (b'{"op":"GET_KEY","ksid":"not-a-uuid"}', "ksid"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.upper().encode() + b'"}', "ksid"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'","count":0}', "count"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'","count":1025}', "count"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'","count":true}', "count"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'","timeout_s":0}', "timeout_s"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'","timeout_s":3600.5}', "timeout_s"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'","timeout_s":1e400}', "timeout_s"),
    (b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'","timeout_s":NaN}', "line"),
    (b'{"op":"ACCEPT","name":"a"}', "timeout_s"),
    (b'{"op":"OPEN_CONNECT","destination":"b","qos":[]}', "qos"),
    (b'{"op":"OPEN_CONNECT","destination":"b","qos":{"key_chunk_size":0}}', "qos.key_chunk_size"),
    (b'{"op":"OPEN_CONNECT","destination":"b","qos":{"key_chunk_size":65536}}',
     "qos.key_chunk_size"),
    (b'{"op":"OPEN_CONNECT","destination":"b","qos":{"service":"gold"}}', "qos.service"),
    (b'{"op":"OPEN_CONNECT","destination":"b","qos":{"service":"guaranteed"}}', "qos.rate_bps"),
    (b'{"op":"OPEN_CONNECT","destination":"b","qos":{"rate_bps":-1}}', "qos.rate_bps"),
    (b'{"op":"OPEN_CONNECT","destination":"b","qos":{"burst":1}}', "qos.burst"),
    (b'{"op":"STATUS","id":' + b"1" * 5000 + b"}", "line"),
    (b"[" * 30000 + b"]" * 30000, "line"),
    (b'{"op":"STATUS"}\n{"op":"STATUS"}', "line"),
    (b'{"op":"REGISTER","name":"\xff"}', "line"),
]


@pytest.mark.parametrize("line, field", BAD_REQUESTS)
def test_invalid_requests_name_the_field(line, field):
    with pytest.raises(DecodeError) as info:
        decode_request(line)
    assert info.value.field == field and info.value.layer == "keyapi"


def test_offsets_of_invalid_json_and_utf8():
    with pytest.raises(DecodeError) as info:
        decode_request('{"op": "é",,}'.encode())
    assert info.value.offset == len('{"op": "é",'.encode())
    with pytest.raises(DecodeError) as info:
        decode_request(b'{"op":"\xff"}')
    assert info.value.offset == 7


def test_defaults_of_optional_fields():
    request = decode_request(b'{"op":"GET_KEY","ksid":"' + KSID.encode() + b'"}')
    assert request == GetKeyRequest(KSID, 10.0, 1)
    assert decode_request(b'{"op":"OPEN_CONNECT","destination":"b"}').qos == Qos()
    opened = decode_request(b'{"op":"OPEN_CONNECT","destination":"b","qos":{"rate_bps":9}}')
    assert opened.qos == Qos(rate_bps=9)


def test_over_long_request_line_is_refused():
    line = b'{"op":"REGISTER","name":"' + b"a" * MAX_REQUEST_LINE + b'"}'
    with pytest.raises(DecodeError) as info:
        decode_request(line)
    assert info.value.field == "line" and info.value.offset == MAX_REQUEST_LINE


@pytest.mark.parametrize("request_", [
    RegisterRequest("no spaces"), UnregisterRequest(""), AcceptRequest("a", 0.0),
    GetKeyRequest("x"), GetKeyRequest(KSID, count=0), CloseRequest(KSID.upper()),
    OpenConnectRequest("b", Qos(service="guaranteed")), StatusRequest(request_id=True),
    OpenConnectRequest("b", Qos(timeout_s=float("nan"))), "not a request"])
def test_encoder_refuses_what_the_decoder_would(request_):
    with pytest.raises(EncodeError):
        encode_request(request_)


BAD_KEYS = [
    ('[{"index":0,"bits":8,"key":"AA=="}]', None, "ksid"),
    ('[{"index":0,"bits":16,"key":"AA=="}]', KSID, "keys[0].key"),
    ('[{"index":0,"bits":8,"key":"AA"}]', KSID, "keys[0].key"),
    ('[{"index":0,"bits":8,"key":"AB=="}]', KSID, "keys[0].key"),
    ('[{"index":-1,"bits":8,"key":"AA=="}]', KSID, "keys[0].index"),
    ('[{"index":0,"bits":0,"key":""}]', KSID, "keys[0].bits"),
    ('[{"index":0,"bits":8}]', KSID, "keys[0].key"),
    ('[7]', KSID, "keys[0]"),
    ('{}', KSID, "keys"),
]


@pytest.mark.parametrize("keys, ksid, field", BAD_KEYS)
def test_invalid_key_answers(keys, ksid, field):
    document = '{"status":0,"status_name":"SUCCESSFUL","keys":' + keys
    document += f',"ksid":"{ksid}"' * (ksid is not None) + "}"
    with pytest.raises(DecodeError) as info:
        decode_response(document.encode())
    assert info.value.field == field


@pytest.mark.parametrize("line, field", [
    (b'{"status":99,"status_name":"X"}', "status"),
    (b'{"status":0,"status_name":"TIMEOUT"}', "status_name"),
    (b'{"status":0}', "status_name"),
    (b'{"status":0,"status_name":"SUCCESSFUL","port":70000}', "port"),
    (b'{"status":0,"status_name":"SUCCESSFUL","node":[]}', "node"),
    (b'{"status":0,"status_name":"SUCCESSFUL","extra":1}', "extra"),
])
def test_invalid_answers_name_the_field(line, field):
    with pytest.raises(DecodeError) as info:
        decode_response(line)
    assert info.value.field == field


def test_answer_keys_must_belong_to_the_answer_stream():
    chunk = KeyChunk(KSID, 0, 8, b"\x01")
    with pytest.raises(EncodeError):
        encode_response(Response(Status.SUCCESSFUL, ksid=str(uuid.uuid4()), keys=(chunk,)))
    with pytest.raises(EncodeError):
        encode_response(Response(Status.SUCCESSFUL, ksid=KSID,
                                 keys=(KeyChunk(KSID, 0, 16, b"\x01"),)))


def test_key_bytes_stay_out_of_reprs():
    chunk = KeyChunk(KSID, 0, 64, b"SECRETKY")
    answer = Response(Status.SUCCESSFUL, ksid=KSID, keys=(chunk,))
    assert "SECRETKY" not in repr(answer) and "SECRETKY" not in repr(decode_response(
        encode_response(answer)))


def test_request_id_of_bad_lines():
    assert request_id_of(b'{"op":"FLY","id":"x7"}') == "x7"
    assert request_id_of(b'{"op":"FLY","id":[1]}') is None
    assert request_id_of(b"garbage") is None


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=8),
       st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_line_buffer_reassembles_any_split(lines, cuts):
    stream = b"".join(line + b"\n" for line in lines)
    buffer, got, position = LineBuffer(64), [], 0
    while position < len(stream):
        step = cuts[position % len(cuts)]
        buffer.feed(stream[position: position + step])
        position += step
        while (line := buffer.next_line()) is not None:
            got.append(line)
    assert got == lines and buffer.rest() == b""


def test_line_buffer_limit():
    buffer = LineBuffer(8)
    buffer.feed(b"12345678\n123456789")
    assert buffer.next_line() == b"12345678"
    with pytest.raises(DecodeError):
        buffer.next_line()
    buffer = LineBuffer(8)
    buffer.feed(b"123456789\n")
    with pytest.raises(DecodeError):
        buffer.next_line()
