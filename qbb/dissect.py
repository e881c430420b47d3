"""Layered dissection of captures of QBB classical channels.

Loading this module binds qbb's scapy layers so that ``rdpcap()`` of a capture dissects
``Ether / IP / UDP / Q3P / QKDNL / {OSPF | ICMP | QKDTL | Q-RoKR}`` top to bottom
(shared/DESIGN.md, "Wire conventions"). The QKDNL header is dissected by scapy's own
``IP`` layer, routing by ``scapy.contrib.ospf`` and errors by scapy's ``ICMP``; Q3P, QKDTL
and Q-RoKR have layers of their own. An encrypted Q3P payload stays ciphertext.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scapy.fields import ConditionalField
from scapy.packet import NoPayload, Packet
from scapy.utils import PcapReader

import qbb.q3p.scapy_layers  # noqa: F401  (binds UDP/7355 -> Q3P -> IP)
import qbb.routing.rokr_scapy  # noqa: F401  (binds IP proto 254)
import qbb.transport.scapy_layers  # noqa: F401  (binds IP proto 253)
from scapy.contrib import ospf as _ospf  # noqa: F401  (binds IP proto 89)
from qbb.errors import QbbError


def layers(packet: Packet) -> Iterator[Packet]:
    """The layers of ``packet``, outermost first (each without its payload)."""
    layer = packet
    while layer is not None and not isinstance(layer, NoPayload):
        yield layer
        layer = layer.payload


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a scapy field value."""
    if isinstance(value, Packet):
        return {"layer": value.name, "fields": layer_fields(value)}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def active_fields(layer: Packet) -> list[Any]:
    """The fields present in this layer (conditional fields whose condition holds)."""
    return [f for f in layer.fields_desc
            if not isinstance(f, ConditionalField) or f._evalcond(layer)]


def layer_fields(layer: Packet) -> dict[str, Any]:
    """The fields of one layer (not its payload) as plain values."""
    return {field.name: _plain(layer.getfieldval(field.name)) for field in active_fields(layer)}


def dissect_packet(packet: Packet) -> list[dict[str, Any]]:
    """One dict per layer: ``{"layer": name, "fields": {...}}``."""
    return [{"layer": layer.name, "fields": layer_fields(layer)} for layer in layers(packet)]


def read_capture(path: str | Path) -> Iterator[Packet]:
    """Packets of a pcap / pcapng file; a missing or unreadable file is a QbbError."""
    path = Path(path)
    if not path.is_file():
        raise QbbError(f"no such capture file: {path}")
    try:
        with PcapReader(str(path)) as reader:
            yield from reader
    except (OSError, ValueError, EOFError) as error:  # scapy's Scapy_Exception is an Exception
        raise QbbError(f"cannot read capture {path}: {error}") from None
    except Exception as error:  # scapy raises bare Scapy_Exception for bad magic
        if type(error).__name__ == "Scapy_Exception":
            raise QbbError(f"cannot read capture {path}: {error}") from None
        raise


def summary_line(index: int, packet: Packet) -> str:
    names = " / ".join(layer.name for layer in layers(packet))
    return f"#{index} t={float(packet.time):.6f} len={len(packet)}  {names}"


def format_text(index: int, packet: Packet) -> str:
    """A readable multi-line dissection of one packet."""
    lines = [summary_line(index, packet)]
    for layer in layers(packet):
        fields = ", ".join(f"{f.name}={_short(_shown(layer, f))}" for f in active_fields(layer))
        lines.append(f"    {layer.name}: {fields}")
    return "\n".join(lines)


def _shown(layer: Packet, field: Any) -> Any:
    """A field as a person reads it: enum names, flag letters, addresses (scapy's i2repr)."""
    value = layer.getfieldval(field.name)
    if isinstance(value, (list, Packet)):
        return _plain(value)
    try:
        return field.i2repr(layer, value)
    except Exception:  # a field scapy cannot render must not stop the dissection
        return _plain(value)


def _short(value: Any, limit: int = 64) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_json(index: int, packet: Packet) -> str:
    """One JSON object for one packet: index, time, length and its layers in order."""
    return json.dumps({"index": index, "time": float(packet.time), "length": len(packet),
                       "layers": dissect_packet(packet)})
