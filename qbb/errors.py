"""The one error hierarchy of qbb.

Every decoder raises only :class:`DecodeError`; its message names the layer, the field
and the byte offset, so a node can count and log why it dropped a packet and go on.
"""

from __future__ import annotations


class QbbError(Exception):
    """Base of every error qbb raises on purpose."""


class DecodeError(QbbError, ValueError):
    """Bytes that are not a valid message of ``layer``.

    ``field`` is a dotted path (``"hello.neighbors"``), ``offset`` the byte offset
    into the decoded buffer where the bad field starts (or where the data ran out).
    """

    def __init__(self, layer: str, field: str, offset: int, reason: str) -> None:
        self.layer = layer
        self.field = field
        self.offset = offset
        self.reason = reason
        super().__init__(f"{layer}: field {field!r} at byte {offset}: {reason}")


class EncodeError(QbbError, ValueError):
    """A message object that cannot be put on the wire (a value out of range)."""

    def __init__(self, layer: str, field: str, reason: str) -> None:
        self.layer = layer
        self.field = field
        self.reason = reason
        super().__init__(f"{layer}: cannot encode field {field!r}: {reason}")


class ConfigError(QbbError):
    """A topology, address plan or command-line setting that cannot be used."""
