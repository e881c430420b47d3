"""Key-store persistence: one store file per link plus a small lease-mark file.

The store file holds SECRET KEY MATERIAL (the unused key of both pools): it is created with
mode 0600 and must be treated like a private key.  Both files are written atomically (a
temporary file in the same directory, ``fsync``, ``os.replace``, ``fsync`` of the directory).

Recovery rule (``docs/keystore.md`` has the full argument):

* ``save`` writes the whole state under a new *generation* and resets the leases.
* Before :meth:`LinkKeyStore.take` hands out encryption key ending beyond the current mark,
  it has the mark file rewritten with ``enc_mark = end + lease`` (and likewise ``get`` with
  ``dec_mark`` for decryption key); only then is the key handed out.
* ``load`` reads the store file; if the mark file carries the same (or a newer) generation,
  encryption resumes at ``max(enc_next, enc_mark)`` and decryption key below ``dec_mark`` is
  retired.  Key handed out after the last save but before a crash is thus skipped -- lost,
  never reused -- and a clean ``save`` before shutdown loses nothing.  ``load`` then saves
  at once under a new generation so a second crash cannot fall back to the old marks.

Store file layout (big-endian; offsets in bytes)::

    0    4   magic "QBKS"            72   8  enc_next       112  48 counters: 6 x u64
    4    2   version = 1             80   8  enc_end        160   4 m = used ranges
    6    2   flags: bit 0 initiator  88   8  dec_floor      164 16m (start u64, end u64)
    8    8   generation              96   8  dec_end         ..   8 enc key length, key
    16   8   merged stream position  104  8  dec_highest     ..   8 dec key length, key
    24   2   key_ratio, 26 6 zero, 32..72: capacity, dec_slack, split_block,
             compact_block, lease (u64 each)                 end  32 SHA-256 of all above

Mark file: magic "QBKM", version u16, flags u16 (bit 0 enc mark set, bit 1 dec mark set),
generation u64, enc_mark u64, dec_mark u64, SHA-256 of bytes 0..32 -- 64 bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import construct as c

from qbb.codec import build, fail, parse
from qbb.errors import ConfigError
from qbb.q3p.keystore import (
    KeyStoreConfig, KeyStoreState, LinkKeyStore, direction_ends,
)

LAYER = "keystore-file"
VERSION = 1


def _sealed(name: str, body: c.Struct) -> c.Struct:
    return name / c.Struct(
        "body" / c.RawCopy(body),
        "digest" / c.Checksum(c.Bytes(32), lambda data: hashlib.sha256(data).digest(),
                              c.this.body.data),
    )


STORE_FILE = _sealed("store", c.Struct(
    "magic" / c.Const(b"QBKS"),
    "version" / c.Const(VERSION, c.Int16ub),
    "flags" / c.BitStruct("reserved" / c.Const(0, c.BitsInteger(15)), "initiator" / c.Flag),
    "generation" / c.Int64ub,
    "position" / c.Int64ub,
    "key_ratio" / c.Int16ub,
    "zero" / c.Const(bytes(6)),
    *(name / c.Int64ub for name in ("capacity", "dec_slack", "split_block",
                                    "compact_block", "lease")),
    *(name / c.Int64ub for name in ("enc_next", "enc_end", "dec_floor", "dec_end",
                                    "dec_highest")),
    "counters" / c.Array(6, c.Int64ub),
    "used" / c.PrefixedArray(c.Int32ub, c.Struct("start" / c.Int64ub, "end" / c.Int64ub)),
    "enc_key" / c.Prefixed(c.Int64ub, c.GreedyBytes),
    "dec_key" / c.Prefixed(c.Int64ub, c.GreedyBytes),
))

MARK_FILE = _sealed("mark", c.Struct(
    "magic" / c.Const(b"QBKM"),
    "version" / c.Const(VERSION, c.Int16ub),
    "flags" / c.BitStruct("reserved" / c.Const(0, c.BitsInteger(14)),
                          "dec_set" / c.Flag, "enc_set" / c.Flag),
    "generation" / c.Int64ub,
    "enc_mark" / c.Int64ub,
    "dec_mark" / c.Int64ub,
))

_CONFIG = ("key_ratio", "capacity", "dec_slack", "split_block", "compact_block", "lease")
_OFFSETS = ("position", "enc_next", "enc_end", "dec_floor", "dec_end", "dec_highest")


@dataclass(frozen=True)
class Marks:
    """The durable lease marks of one generation."""

    generation: int
    enc_mark: int | None = None
    dec_mark: int | None = None


def encode_store(state: KeyStoreState, generation: int) -> bytes:
    cfg = state.config
    body = {"flags": {"initiator": cfg.initiator}, "generation": generation,
            **{name: getattr(cfg, name) for name in _CONFIG},
            **{name: getattr(state, name) for name in _OFFSETS},
            "counters": list(state.counters), "enc_key": state.enc_key, "dec_key": state.dec_key,
            "used": [{"start": lo, "end": hi} for lo, hi in state.dec_used]}
    return build(STORE_FILE, {"body": {"value": body}}, LAYER)


def decode_store(data: bytes) -> tuple[KeyStoreState, int]:
    """The saved state and its generation; :class:`DecodeError` for a bad file."""
    body = parse(STORE_FILE, data, LAYER).body.value
    try:
        config = KeyStoreConfig(initiator=body.flags.initiator,
                                **{name: body[name] for name in _CONFIG})
    except ConfigError as error:
        fail(LAYER, "store.body.config", 24, str(error))
    used = tuple((item.start, item.end) for item in body.used)
    state = KeyStoreState(config, *(body[name] for name in _OFFSETS[:3]), body.enc_key,
                          body.dec_floor, body.dec_end, body.dec_highest, body.dec_key,
                          used, tuple(body.counters))
    _check_state(state)
    return state, body.generation


def _check_state(state: KeyStoreState) -> None:
    cfg = state.config
    i2r, r2i = direction_ends(state.position, cfg.split_block, cfg.key_ratio)
    if (state.enc_end, state.dec_end) != ((i2r, r2i) if cfg.initiator else (r2i, i2r)):
        fail(LAYER, "store.body.enc_end", 80, "pool ends disagree with the stream position")
    if len(state.enc_key) != max(0, state.enc_end - state.enc_next):
        fail(LAYER, "store.body.enc_key", 0, "encryption key length disagrees with offsets")
    if len(state.dec_key) != max(0, state.dec_end - state.dec_floor):
        fail(LAYER, "store.body.dec_key", 0, "decryption key length disagrees with offsets")
    low = state.dec_floor
    for index, (start, end) in enumerate(state.dec_used):
        if not low <= start < end <= state.dec_end or (index and start == low):
            fail(LAYER, f"store.body.used.{index}", 164 + 16 * index,
                 "used ranges must be sorted, disjoint, merged and inside the window")
        low = end


def encode_marks(marks: Marks) -> bytes:
    body = {"flags": {"enc_set": marks.enc_mark is not None,
                      "dec_set": marks.dec_mark is not None},
            "generation": marks.generation, "enc_mark": marks.enc_mark or 0,
            "dec_mark": marks.dec_mark or 0}
    return build(MARK_FILE, {"body": {"value": body}}, LAYER)


def decode_marks(data: bytes) -> Marks:
    body = parse(MARK_FILE, data, LAYER).body.value
    for name in ("enc", "dec"):
        if not body.flags[f"{name}_set"] and body[f"{name}_mark"]:
            fail(LAYER, f"mark.body.{name}_mark", 16 if name == "enc" else 24,
                 "mark value present but its flag is clear")
    return Marks(body.generation, body.enc_mark if body.flags.enc_set else None,
                 body.dec_mark if body.flags.dec_set else None)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` (mode 0600) so a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class KeyStoreFile:
    """The files of one link's store: ``path`` (secret key) and ``path + ".mark"``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.mark_path = self.path.with_name(self.path.name + ".mark")
        self.generation = 0

    def attach(self, store: LinkKeyStore) -> None:
        """Make ``store`` lease its marks through this file before handing out key."""
        store.set_lease_hook(self._write_marks)

    def save(self, store: LinkKeyStore) -> None:
        """Write the whole state under a new generation, then reset the leases."""
        generation = self.generation + 1
        atomic_write(self.path, encode_store(store.snapshot(), generation))
        self.generation = generation
        store.leases_reset()

    def _write_marks(self, enc_mark: int | None, dec_mark: int | None) -> None:
        atomic_write(self.mark_path, encode_marks(Marks(self.generation, enc_mark, dec_mark)))

    def load(self) -> LinkKeyStore:
        """Restore the store, apply the recovery rule, attach and save a new generation."""
        state, self.generation = decode_store(self.path.read_bytes())
        store = LinkKeyStore.from_state(state)
        marks = self._read_marks()
        if marks is not None and marks.generation >= self.generation:
            if marks.enc_mark is not None:
                store.skip_enc_to(marks.enc_mark)
            if marks.dec_mark is not None:
                store.retire_dec_below(marks.dec_mark)
            self.generation = max(self.generation, marks.generation)
        self.attach(store)
        self.save(store)
        return store

    def _read_marks(self) -> Marks | None:
        try:
            return decode_marks(self.mark_path.read_bytes())
        except FileNotFoundError:
            return None


__all__ = ["KeyStoreFile", "Marks", "atomic_write", "decode_marks", "decode_store",
           "encode_marks", "encode_store"]
