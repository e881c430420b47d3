"""One-time authentication and encryption of Q3P frames (seed 002 §2.5, §3.1 Table II).

Every frame a :class:`~qbb.q3p.endpoint.Q3PEndpoint` sends takes fresh key from the
sender's encryption pool with **one** ``store.take(32 + n)`` call (``n`` = payload bytes
when E is set, else 0)::

    [a_offset, a_offset + 32)          Poly1305 one-time key   -> A-offset = a_offset
    [a_offset + 32, a_offset + 32 + n) one-time pad            -> E-offset = a_offset + 32

Encrypt-then-MAC: the frame is packed once with the plaintext payload and a zeroed tag
slot, the payload is XORed with the pad in place inside that buffer (no separate
ciphertext object: one 57 KB allocation and copy fewer per frame), and the 16-byte
Poly1305 tag over header and ciphertext is written into the slot.  A Poly1305 key used
for one message only is a Wegman-Carter MAC (an almost-universal hash whose output is
masked with key bits): its security is information-theoretic, forgery probability about
``8 * L / 2**106`` for ``L``-byte frames.

The receiver (:func:`verify_frame`, :func:`decrypt_payload`) fetches the same bytes from
its decryption pool (a node's encryption pool is byte for byte its neighbour's decryption
pool at equal offsets, ``docs/keystore.md``):

1. the whole range the frame names must already be ingested, else :class:`SealError`
   ``key.unavailable`` with ``retry=True`` and nothing is consumed (the caller may park
   the frame until more key arrives);
2. the MAC key is fetched and the tag verified before anything in the frame is used;
3. only then is the pad fetched and the payload decrypted.

Key burn.  ``store.get`` marks key used, so the MAC key is fetched with
``store.peek`` (same checks, nothing marked) and consumed with ``get`` only once the tag
verified: a forged or corrupted frame burns no key.  With a store that has no ``peek``
the MAC key is consumed first; a forgery naming unused key then burns 32 bytes and the
genuine frame that later uses them is rejected (``key.already_used``) and retransmitted
with fresh key: a denial of service, never a security failure.
"""

from __future__ import annotations

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

from qbb.errors import QbbError
from qbb.q3p.keystore import (KeyAlreadyUsed, KeyStoreError, KeyUnavailable, LinkKeyStore,
                              otp_xor)
from qbb.q3p.packet import (Q3P_HEADER_LEN, Command, Q3PFrame, attach_tag, authenticated_bytes,
                            encode_frame, encode_frame_without_tag)

AUTH_KEY_LEN = 32


class SealError(QbbError):
    """A frame that cannot be sealed or opened; ``reason`` is its counter name."""

    def __init__(self, reason: str, detail: str = "", retry: bool = False) -> None:
        self.reason = reason
        self.retry = retry
        super().__init__(f"{reason}: {detail}" if detail else reason)


def key_reason(error: KeyStoreError, prefix: str = "key") -> str:
    """Counter name of a key-store refusal."""
    if isinstance(error, KeyUnavailable):
        return f"{prefix}.unavailable"
    if isinstance(error, KeyAlreadyUsed):
        return f"{prefix}.already_used"
    return f"{prefix}.out_of_range"


def seal_frame(store: LinkKeyStore, number: int, command: Command, payload: bytes, *,
               encrypt: bool = False, authenticate: bool = True, more: bool = False,
               priority: int = 0, channel: int = 0) -> bytes:
    """Frame bytes ready for the wire; raises :class:`KeyUnavailable` when key is short."""
    size = len(payload)
    encrypt = encrypt and size > 0
    if not authenticate and not encrypt:
        return encode_frame(Q3PFrame(number, command, bytes(payload), None, False, more,
                                     priority, channel))
    key_len = (AUTH_KEY_LEN if authenticate else 0) + (size if encrypt else 0)
    offset, key = store.take(key_len)
    a_offset = offset if authenticate else 0
    e_offset = offset + (AUTH_KEY_LEN if authenticate else 0)
    if not authenticate:  # encrypted, no tag
        frame = Q3PFrame(number, command, otp_xor(payload, key), None, True, more, priority,
                         channel, e_offset, 0)
        return encode_frame(frame)
    # the plaintext goes into the frame buffer and is one-time padded there, in place
    frame = Q3PFrame(number, command, payload, None, encrypt, more, priority, channel,
                     e_offset if encrypt else 0, a_offset)
    buffer = encode_frame_without_tag(frame)
    if encrypt:
        _xor_into(buffer, Q3P_HEADER_LEN, key, AUTH_KEY_LEN, size)
    tag = Poly1305.generate_tag(key[:AUTH_KEY_LEN], authenticated_bytes(buffer))
    return bytes(attach_tag(buffer, tag))


def _xor_into(buffer: bytearray, start: int, pad: bytes, pad_start: int, size: int) -> None:
    """``buffer[start:start + size] ^= pad[pad_start:pad_start + size]``, vectorised."""
    if size < 64:
        view = memoryview(buffer)[start:start + size]
        view[:] = otp_xor(bytes(view), pad[pad_start:pad_start + size])
        return
    body = np.frombuffer(buffer, dtype=np.uint8, count=size, offset=start)
    np.bitwise_xor(body, np.frombuffer(pad, dtype=np.uint8, count=size, offset=pad_start),
                   out=body)


def _key_end(frame: Q3PFrame) -> int:
    end = frame.a_offset + AUTH_KEY_LEN
    if frame.encrypted and frame.payload:
        end = max(end, frame.e_offset + len(frame.payload))
    return end


def _mac_key(store: LinkKeyStore, offset: int) -> tuple[bytes, bool]:
    """The MAC key and whether it still has to be consumed (it was only peeked)."""
    peek = getattr(store, "peek", None)
    try:
        if peek is not None:
            return peek(offset, AUTH_KEY_LEN), True
        return store.get(offset, AUTH_KEY_LEN), False
    except KeyStoreError as error:
        raise SealError(key_reason(error), str(error),
                        isinstance(error, KeyUnavailable)) from None


def verify_frame(store: LinkKeyStore, frame: Q3PFrame, data: bytes) -> None:
    """Check the one-time MAC of an authenticated ``frame`` decoded from ``data``."""
    if frame.tag is None:
        raise SealError("unauthenticated")
    if _key_end(frame) > store.positions().dec_end:
        raise SealError("key.unavailable", "frame names key not yet received", True)
    key, pending = _mac_key(store, frame.a_offset)
    try:
        Poly1305.verify_tag(key, authenticated_bytes(data), frame.tag)
    except InvalidSignature:
        raise SealError("auth.bad_tag") from None
    if pending:
        try:
            store.get(frame.a_offset, AUTH_KEY_LEN)
        except KeyStoreError as error:
            raise SealError(key_reason(error), str(error)) from None


def decrypt_payload(store: LinkKeyStore, frame: Q3PFrame) -> bytes:
    """The plaintext payload of a verified frame (its pad is consumed)."""
    if not frame.encrypted or not frame.payload:
        return frame.payload
    try:
        pad = store.get(frame.e_offset, len(frame.payload))
    except KeyStoreError as error:
        raise SealError(key_reason(error, "pad"), str(error)) from None
    return otp_xor(frame.payload, pad)


__all__ = ["AUTH_KEY_LEN", "SealError", "decrypt_payload", "key_reason", "seal_frame",
           "verify_frame"]
