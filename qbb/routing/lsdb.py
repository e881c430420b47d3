"""The link-state database of one area (RFC 2328 §12, §13.2, §14).

An :class:`AreaLsdb` maps ``lsa_key(lsa)`` = (LS type, Link State ID, Advertising Router)
to an :class:`LsdbEntry`: the LSA exactly as installed (its LS age is the age at
installation) and the virtual time of installation.  Ages are derived, never stored
back: ``age(now) = min(MaxAge, installed age + floor(now - installed_at))`` (§12.1.1,
§14), so the database needs no per-second tick.  An LSA that reaches MaxAge by aging
is reported once by :meth:`AreaLsdb.newly_expired` so the router floods it (§14); the
router removes MaxAge LSAs (:meth:`AreaLsdb.remove`) when they are on no neighbour's
retransmission list and no neighbour is in Exchange or Loading (§14 "premature aging"
and "flushing").

LSA headers (with their Fletcher checksums) are computed once per installed instance
(:func:`header_of` caches them), so recency comparisons (§13.1, :func:`newer`) need no
re-encoding.  :meth:`AreaLsdb.install` tells whether the contents changed (§13.2: body,
options or MaxAge-ness), i.e. whether the routing tables must be recomputed.

Sequence-number rules (§12.1.6) for self-originated LSAs are in :func:`next_sequence`:
the next instance has sequence + 1; at MaxSequenceNumber the LSA must first be flushed
(MaxAge) and, once it has left the database, re-originated with InitialSequenceNumber.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from qbb.routing.lsa import (
    INITIAL_SEQUENCE_NUMBER, MAX_AGE, MAX_SEQUENCE_NUMBER, Lsa, LsaHeader, compare_lsa,
    lsa_header, lsa_key)

__all__ = ["AreaLsdb", "LsdbEntry", "WRAP", "header_of", "newer", "next_sequence",
           "same_contents", "with_age"]

Key = tuple[int, str, str]
WRAP = object()  # next_sequence: flush first, sequence space exhausted
_EPSILON = 1e-9


@lru_cache(maxsize=8192)
def header_of(lsa: Lsa) -> LsaHeader:
    """The wire header of ``lsa`` (length and checksum filled), cached per instance."""
    return lsa_header(lsa)


def newer(a: Lsa | LsaHeader, b: Lsa | LsaHeader) -> int:
    """:func:`~qbb.routing.lsa.compare_lsa` on cached headers: 1, 0 or -1."""
    ha = a if isinstance(a, LsaHeader) else header_of(a)
    hb = b if isinstance(b, LsaHeader) else header_of(b)
    return compare_lsa(ha, hb)


def with_age(lsa: Lsa, age: int) -> Lsa:
    """``lsa`` with LS age ``age`` (capped at MaxAge)."""
    age = min(age, MAX_AGE)
    return lsa if lsa.ls_age == age else replace(lsa, ls_age=age)


def same_contents(a: Lsa, b: Lsa) -> bool:
    """Equal apart from LS age and sequence number (§12.4: no new instance needed)."""
    return replace(a, ls_age=0, ls_sequence_number=0) == replace(
        b, ls_age=0, ls_sequence_number=0)


def next_sequence(current: Lsa | None) -> int | object:
    """Sequence number of the next self-originated instance, or :data:`WRAP`."""
    if current is None:
        return INITIAL_SEQUENCE_NUMBER
    if current.ls_sequence_number >= MAX_SEQUENCE_NUMBER:
        return WRAP
    return current.ls_sequence_number + 1


@dataclass
class LsdbEntry:
    """One installed LSA instance."""

    lsa: Lsa
    installed_at: float
    expired_reported: bool = False

    def age(self, now: float) -> int:
        return min(MAX_AGE, self.lsa.ls_age + math.floor(now - self.installed_at + _EPSILON))

    def current(self, now: float) -> Lsa:
        """The LSA with its LS age as of ``now``."""
        return with_age(self.lsa, self.age(now))

    def header(self, now: float) -> LsaHeader:
        return replace(header_of(self.lsa), ls_age=self.age(now))

    def maxage_at(self) -> float:
        """Virtual time at which this instance reaches MaxAge."""
        return self.installed_at + max(0, MAX_AGE - self.lsa.ls_age)

    def is_maxage(self, now: float) -> bool:
        return self.age(now) >= MAX_AGE


class AreaLsdb:
    """The LSDB of one area; ``version`` counts installs and removals."""

    def __init__(self, area: str) -> None:
        self.area = area
        self.entries: dict[Key, LsdbEntry] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: Key) -> bool:
        return key in self.entries

    def get(self, key: Key) -> LsdbEntry | None:
        return self.entries.get(key)

    def install(self, lsa: Lsa, now: float) -> bool:
        """Install ``lsa`` (replacing any instance); True when its contents changed."""
        key = lsa_key(lsa)
        old = self.entries.get(key)
        self.entries[key] = LsdbEntry(lsa, now, expired_reported=lsa.ls_age >= MAX_AGE)
        self.version += 1
        if old is None:
            return True
        old_maxage, new_maxage = old.is_maxage(now), lsa.ls_age >= MAX_AGE
        return old_maxage != new_maxage or not same_contents(old.lsa, lsa)

    def remove(self, key: Key) -> None:
        if self.entries.pop(key, None) is not None:
            self.version += 1

    def headers(self, now: float) -> list[LsaHeader]:
        """Headers of every instance, ages as of ``now`` (for DD summary lists)."""
        return [entry.header(now) for entry in self.entries.values()]

    def snapshot(self, now: float, include_maxage: bool = False) -> dict[Key, Lsa]:
        """``key -> LSA`` with current ages; MaxAge instances left out by default."""
        return {key: entry.current(now) for key, entry in self.entries.items()
                if include_maxage or not entry.is_maxage(now)}

    def instances(self) -> dict[Key, tuple[int, int]]:
        """``key -> (sequence number, checksum)``: what identical databases share."""
        return {key: (e.lsa.ls_sequence_number, header_of(e.lsa).ls_checksum)
                for key, e in self.entries.items()}

    def maxage_keys(self, now: float) -> list[Key]:
        return [key for key, entry in self.entries.items() if entry.is_maxage(now)]

    def newly_expired(self, now: float) -> list[Key]:
        """Keys whose instance reached MaxAge by aging since the last call (§14)."""
        keys = []
        for key, entry in self.entries.items():
            if not entry.expired_reported and entry.is_maxage(now):
                entry.expired_reported = True
                if entry.lsa.ls_age < MAX_AGE:
                    keys.append(key)
        return keys

    def next_expiry(self) -> float | None:
        """Earliest time an instance not yet reported reaches MaxAge."""
        times = [e.maxage_at() for e in self.entries.values() if not e.expired_reported]
        return min(times) if times else None
