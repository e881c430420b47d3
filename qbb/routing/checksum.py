"""The Fletcher checksum of OSPF LSAs (RFC 2328 12.1.7, RFC 905 Annex B, ISO 8473).

Two running sums over the octets ``a[0..L-1]`` of the checksummed data, modulo 255::

    C0 = sum(a[i])                C1 = sum((L - i) * a[i])

The two check octets ``X, Y`` stored at 0-based offset ``p`` (the checksum octets
being zero while summing) are chosen so that both sums over the result are 0 mod 255::

    X = ((L - p - 1) * C0 - C1) mod 255        Y = (C1 - (L - p) * C0) mod 255

and a result of 0 is written as 255 (ISO 8473: both octets are then never zero, and
zero octets are reserved for "checksum not computed", which OSPF does not allow).

An LSA's checksum covers the whole LSA except the LS age (its first two octets); the
checksum field is at LSA offset 16, that is offset 14 of the checksummed data.  Since
0 and 255 are the same residue, the RFC 905 test (both sums zero) would also accept a
checksum octet spelled 0x00 instead of 0xFF; :func:`verify_lsa_checksum` compares with
the generated value instead, which accepts exactly the canonical spelling.  (Both sums
zero *and* both octets non-zero is the same test: :func:`lsa_checksum_verifies`.)

The sums are computed without a Python loop.  ``C0`` is ``sum(a)``.  For ``C1``, read
the octets as one big-endian integer ``V = sum(a[i] * 256**(L-1-i))``; since
``256**k = (1 + 255)**k = 1 + 255*k (mod 255**2)``, ``V = S + 255*W (mod 255**2)`` with
``S = sum(a[i])`` and ``W = sum((L-1-i) * a[i])``, so ``W mod 255`` is
``((V - S) mod 255**2) / 255`` and ``C1 = W + S``.
"""

from __future__ import annotations

CHECKSUM_OFFSET = 16  # of the checksum field within the LSA
_AGE_SIZE = 2
LSA_HEADER_SIZE = 20
_MOD2 = 255 * 255


def fletcher_sums(data: bytes) -> tuple[int, int]:
    """The RFC 905 verification sums ``(C0, C1)`` (each mod 255); both are 0 for intact data."""
    total = sum(data)
    weighted = ((int.from_bytes(data, "big") - total) % _MOD2) // 255 + total
    return total % 255, weighted % 255


def check_octets(data: bytes, offset: int) -> int:
    """The two check octets (as an int) for ``data`` whose octets at ``offset`` are zero."""
    length = len(data)
    c0, c1 = fletcher_sums(data)
    x = ((length - offset - 1) * c0 - c1) % 255 or 255
    y = (c1 - (length - offset) * c0) % 255 or 255
    return (x << 8) | y


def fletcher_checkbytes(data: bytes, offset: int) -> int:
    """The two ISO 8473 check octets for ``data`` stored at ``offset`` (as an int)."""
    if offset < 0 or offset + 2 > len(data):
        raise ValueError(f"check octets at {offset} do not fit in {len(data)} bytes")
    return check_octets(bytes(data[:offset]) + b"\x00\x00" + bytes(data[offset + 2:]), offset)


def lsa_checksum(lsa_bytes: bytes) -> int:
    """The LS checksum for the encoded LSA ``lsa_bytes`` (its checksum field ignored)."""
    if len(lsa_bytes) < LSA_HEADER_SIZE:
        raise ValueError(f"an LSA has at least 20 bytes, got {len(lsa_bytes)}")
    return fletcher_checkbytes(lsa_bytes[_AGE_SIZE:], CHECKSUM_OFFSET - _AGE_SIZE)


def verify_lsa_checksum(lsa_bytes: bytes) -> bool:
    """True when the LS checksum field of ``lsa_bytes`` is the one RFC 2328 generates."""
    if len(lsa_bytes) < LSA_HEADER_SIZE:
        return False
    stored = int.from_bytes(lsa_bytes[CHECKSUM_OFFSET:CHECKSUM_OFFSET + 2], "big")
    return stored == lsa_checksum(lsa_bytes)


def lsa_checksum_verifies(data: bytes, start: int, end: int) -> bool:
    """:func:`verify_lsa_checksum` of ``data[start:end]`` (at least 20 bytes), by sums.

    Both RFC 905 sums over ``data[start+2:end]`` are zero and neither check octet is 0.
    """
    return (data[start + CHECKSUM_OFFSET] != 0 and data[start + CHECKSUM_OFFSET + 1] != 0
            and fletcher_sums(data[start + _AGE_SIZE:end]) == (0, 0))
