"""Every ``decode_*`` function in qbb, found by walking the package, returns a value or
raises the project's DecodeError for any input: random bytes, mutations of valid
messages from ``qbb.samples``, and values that are not bytes at all."""

import importlib
import inspect
import pkgutil

import pytest
from hypothesis import given, strategies as st

import qbb
from qbb import samples
from qbb.errors import DecodeError
from qbb.netlayer.packet import encode_packet


def _decoders():
    found = {}
    for info in pkgutil.walk_packages(qbb.__path__, "qbb."):
        if ".bench" in info.name or info.name.endswith(("cli", "__main__")):
            continue
        module = importlib.import_module(info.name)
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("decode_") or func.__module__ != module.__name__:
                continue
            required = [p for p in inspect.signature(func).parameters.values()
                        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
            if len(required) == 1 and "bytes" in str(required[0].annotation):
                found[f"{module.__name__}.{name}"] = func
    return found


DECODERS = _decoders()
VALID = [bytes(frame) for _, frame in samples.q3p_samples()]
VALID += [encode_packet(p) for p in samples.network_samples().values()]
VALID += [p.payload for p in samples.network_samples().values()]


def test_the_walk_finds_every_layer():
    modules = {name.rsplit(".", 1)[0] for name in DECODERS}
    assert {"qbb.q3p.packet", "qbb.netlayer.packet", "qbb.netlayer.icmp",
            "qbb.routing.packet", "qbb.routing.lsa", "qbb.transport.packet",
            "qbb.routing.rokr_packet"} <= modules


def _call(func, data):
    try:
        func(data)
    except DecodeError as error:
        assert error.layer and error.field and error.offset >= 0
        assert f"at byte {error.offset}" in str(error)


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(data=st.binary(max_size=300))
def test_random_bytes(name, data):
    _call(DECODERS[name], data)


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(index=st.integers(0, len(VALID) - 1), cut=st.integers(0, 400),
       flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 7)), max_size=3),
       tail=st.binary(max_size=8))
def test_mutated_valid_messages(name, index, cut, flips, tail):
    data = bytearray(VALID[index])
    for position, bit in flips:
        if data:
            data[position % len(data)] ^= 1 << bit
    _call(DECODERS[name], bytes(data[: cut if cut < len(data) else len(data)]) + tail)


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("value", [None, "text", 17, [1, 2]])
def test_values_that_are_not_bytes(name, value):
    _call(DECODERS[name], value)
