"""Pieces shared by the OSPFv2 codecs (:mod:`qbb.routing.lsa`, :mod:`qbb.routing.packet`).

* :class:`Options` is the 8-bit OSPF Options field (RFC 2328 A.2) carried by Hello and
  Database Description packets and by every LSA header.  All eight bits have a meaning
  in RFC 2328 or its successors, so every byte value is representable.
* :class:`EnumField` and :class:`FlagField` are construct adapters between an unsigned
  integer on the wire and a Python ``IntEnum`` / ``IntFlag`` in the dataclasses.  An
  unknown enum value, or a flag bit outside the flag class (a reserved bit that must be
  zero), fails inside the parser, so the resulting :class:`~qbb.errors.DecodeError`
  names the field and its byte offset.
* :func:`parse_at` parses one slice of a larger buffer and reports errors with offsets
  into the whole buffer and with the caller's field prefix; :func:`build_as` prefixes
  the field of an :class:`~qbb.errors.EncodeError` the same way.
* :func:`frozen_tuple` lets the frozen dataclasses accept lists for their sequences
  (stored as tuples, so objects stay hashable and compare equal to decoded ones).
"""

from __future__ import annotations

import enum
from typing import Any

import construct as c

from qbb.codec import build, parse
from qbb.errors import DecodeError, EncodeError

LAYER = "OSPF"


class Options(enum.IntFlag):
    """OSPF Options (RFC 2328 A.2; MT RFC 4915, L RFC 5613, O RFC 5250, DN RFC 4576)."""

    MT = 0x01
    E = 0x02
    MC = 0x04
    NP = 0x08
    L = 0x10  # EA in RFC 2328, LLS data block present in RFC 5613
    DC = 0x20
    O = 0x40  # noqa: E741 - the RFC's name
    DN = 0x80


class EnumField(c.Adapter):
    """An unsigned integer on the wire <-> a member of ``enum_class``."""

    def __init__(self, subcon: c.Construct, enum_class: type[enum.IntEnum]) -> None:
        super().__init__(subcon)
        self.enum_class = enum_class

    def _decode(self, obj: int, context: Any, path: str) -> enum.IntEnum:
        try:
            return self.enum_class(obj)
        except ValueError:
            raise c.MappingError(
                f"unknown {self.enum_class.__name__} value {obj}", path=path) from None

    def _encode(self, obj: Any, context: Any, path: str) -> int:
        try:
            return int(self.enum_class(obj))
        except (ValueError, TypeError):
            raise c.MappingError(
                f"not a {self.enum_class.__name__}: {obj!r}", path=path) from None


class FlagField(c.Adapter):
    """An unsigned integer on the wire <-> an ``IntFlag``; other bits must be zero."""

    def __init__(self, subcon: c.Construct, flag_class: type[enum.IntFlag]) -> None:
        super().__init__(subcon)
        self.flag_class = flag_class
        self.mask = 0
        for member in flag_class:
            self.mask |= int(member)

    def _decode(self, obj: int, context: Any, path: str) -> enum.IntFlag:
        if obj & ~self.mask:
            raise c.ValidationError(
                f"reserved bits 0x{obj & ~self.mask:02x} must be zero", path=path)
        return self.flag_class(obj)

    def _encode(self, obj: Any, context: Any, path: str) -> int:
        if not isinstance(obj, int) or obj < 0 or obj & ~self.mask:
            raise c.ValidationError(f"not a {self.flag_class.__name__}: {obj!r}", path=path)
        return int(obj)


OptionsField = FlagField(c.Int8ub, Options)


def parse_at(struct: c.Construct, data: bytes, start: int, end: int, field: str) -> Any:
    """Parse ``data[start:end]`` whole; errors carry ``field`` and absolute offsets."""
    try:
        return parse(struct, data[start:end], LAYER)
    except DecodeError as error:
        raise DecodeError(LAYER, _join(field, error.field), start + error.offset,
                          error.reason) from None


def _join(prefix: str, field: str) -> str:
    if field == "<message>":
        return prefix
    return f"{prefix}.{field}" if prefix else field


def build_as(struct: c.Construct, value: Any, field: str) -> bytes:
    """Build ``value``; an :class:`EncodeError` names the field below ``field``."""
    try:
        return build(struct, value, LAYER)
    except EncodeError as error:
        raise EncodeError(LAYER, _join(field, error.field), error.reason) from None


def frozen_tuple(instance: Any, *names: str) -> None:
    """Turn list-valued fields of a frozen dataclass into tuples (hashable, comparable)."""
    for name in names:
        value = getattr(instance, name)
        if not isinstance(value, tuple):
            object.__setattr__(instance, name, tuple(value))
