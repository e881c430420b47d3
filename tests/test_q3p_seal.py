"""One-time MAC and one-time pad of Q3P frames (``qbb.q3p.seal``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qbb.q3p.keystore import KeyStoreConfig, KeyUnavailable, LinkKeyStore
from qbb.q3p.packet import Command, decode_frame
from qbb.q3p.seal import AUTH_KEY_LEN, SealError, decrypt_payload, seal_frame, verify_frame


def pair(size: int = 1 << 16) -> tuple[LinkKeyStore, LinkKeyStore]:
    """Sender and receiver stores fed the same device stream (sender = initiator)."""
    stream = os.urandom(size)
    sender = LinkKeyStore(KeyStoreConfig(True, key_ratio=1000))
    receiver = LinkKeyStore(KeyStoreConfig(False, key_ratio=1000))
    sender.ingest(stream)
    receiver.ingest(stream)
    return sender, receiver


def open_frame(store: LinkKeyStore, data: bytes) -> tuple[object, bytes]:
    frame = decode_frame(data)
    verify_frame(store, frame, data)
    return frame, decrypt_payload(store, frame)


@given(payload=st.binary(max_size=3000), encrypt=st.booleans(), number=st.integers(0, 2**32 - 1),
       more=st.booleans(), priority=st.integers(0, 7), channel=st.integers(0, 255))
def test_round_trip(payload: bytes, encrypt: bool, number: int, more: bool, priority: int,
                    channel: int) -> None:
    sender, receiver = pair()
    data = seal_frame(sender, number, Command.DATA, payload, encrypt=encrypt, more=more,
                      priority=priority, channel=channel)
    frame, plain = open_frame(receiver, data)
    assert plain == payload
    assert (frame.message_number, frame.more_fragments, frame.priority, frame.channel) == (
        number, more, priority, channel)
    assert frame.encrypted == (encrypt and bool(payload))
    if frame.encrypted:
        assert frame.e_offset == frame.a_offset + AUTH_KEY_LEN
        if len(payload) >= 16:
            assert payload not in data  # no plaintext on the wire
    used = AUTH_KEY_LEN + (len(payload) if frame.encrypted else 0)
    assert sender.positions().enc_next == used
    assert receiver.status().dec_consumed_bits == 8 * used


def test_replay_and_reuse_are_rejected() -> None:
    sender, receiver = pair()
    data = seal_frame(sender, 1, Command.DATA, b"secret" * 20, encrypt=True)
    open_frame(receiver, data)
    with pytest.raises(SealError) as info:
        open_frame(receiver, data)
    assert info.value.reason == "key.already_used" and not info.value.retry


@given(bit=st.integers(0, 10**6))
def test_any_bit_flip_is_rejected(bit: int) -> None:
    sender, receiver = pair()
    data = bytearray(seal_frame(sender, 5, Command.DATA, b"payload-bytes" * 4, encrypt=True))
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    with pytest.raises(Exception) as info:
        open_frame(receiver, bytes(data))
    assert type(info.value).__name__ in ("SealError", "DecodeError")


def test_unavailable_key_consumes_nothing_and_can_retry() -> None:
    stream = os.urandom(1 << 14)
    sender = LinkKeyStore(KeyStoreConfig(True, key_ratio=1000))
    receiver = LinkKeyStore(KeyStoreConfig(False, key_ratio=1000))
    sender.ingest(stream)
    receiver.ingest(stream[:4096])
    sender.take(4090)
    data = seal_frame(sender, 0, Command.DATA, b"x" * 100, encrypt=True)
    with pytest.raises(SealError) as info:
        open_frame(receiver, data)
    assert info.value.retry and info.value.reason == "key.unavailable"
    assert receiver.status().dec_consumed_bits == 0
    receiver.ingest(stream[4096:])
    assert open_frame(receiver, data)[1] == b"x" * 100


def test_sender_without_key_raises_unavailable() -> None:
    store = LinkKeyStore(KeyStoreConfig(True))
    with pytest.raises(KeyUnavailable):
        seal_frame(store, 0, Command.KEEPALIVE, b"")


def test_forged_tag_burns_no_key() -> None:
    sender, receiver = pair()
    good = seal_frame(sender, 0, Command.DATA, b"y" * 64, encrypt=True)
    data = bytearray(good)
    data[-1] ^= 1
    with pytest.raises(SealError) as info:
        open_frame(receiver, bytes(data))
    assert info.value.reason == "auth.bad_tag"
    assert receiver.status().dec_consumed_bits == 0  # MAC key only peeked
    assert open_frame(receiver, good)[1] == b"y" * 64


class NoPeekStore:
    """A store without ``peek``: the MAC key is consumed before the tag is checked."""

    def __init__(self, store: LinkKeyStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> object:
        if name == "peek":
            raise AttributeError(name)
        return getattr(self.store, name)


def test_without_peek_a_forgery_burns_only_the_mac_key() -> None:
    sender, receiver = pair()
    good = seal_frame(sender, 0, Command.DATA, b"z" * 64, encrypt=True)
    data = bytearray(good)
    data[-1] ^= 1
    store = NoPeekStore(receiver)
    with pytest.raises(SealError):
        open_frame(store, bytes(data))
    assert receiver.status().dec_consumed_bits == 8 * AUTH_KEY_LEN  # the pad is untouched
    with pytest.raises(SealError) as info:
        open_frame(store, good)
    assert info.value.reason == "key.already_used"


def test_unauthenticated_and_plain_frames() -> None:
    sender, receiver = pair()
    data = seal_frame(sender, 3, Command.DATA, b"clear", authenticate=False)
    frame = decode_frame(data)
    assert frame.tag is None and decrypt_payload(receiver, frame) == b"clear"
    assert sender.positions().enc_next == 0
