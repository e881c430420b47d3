"""A fast cryptographic random generator for session keys (AES-256-CTR, after CTR_DRBG).

The ingress node of a key relay (:mod:`qbb.relay`) draws every session key fresh at
random (seed 002 §2.1).  ``os.urandom`` -- the kernel's ChaCha20 generator behind a system
call -- costs about 170 us for the 57 KB of seven 65,535-bit keys, more than everything
else the ingress does per frame (``docs/benchmarks-relay.md``).  :class:`CtrDrbg` produces
the same amount in about 15 us with AES-256 in counter mode (AES-NI through
``cryptography``), structured like NIST SP 800-90A's CTR_DRBG (no derivation function):

* state: a 256-bit AES key ``K`` and a 128-bit counter block ``V``, both seeded from
  ``os.urandom`` (the kernel's entropy pool);
* ``generate(n)``: the next ``n`` bytes of the AES-256-CTR keystream under ``K`` from
  ``V + 1`` (one cipher context, written into a reused buffer: setting up a context costs
  ~30 us, as much as 57 KB of keystream);
* update: after every :data:`REKEY_BYTES` of output the next 48 keystream bytes become the
  new ``K`` and ``V`` (CTR_DRBG's *update*), so a state captured at some moment reveals at
  most the output since the last update (< 1 MiB), nothing earlier (backtracking
  resistance); CTR_DRBG updates after every request, which here would double the cost;
* reseed: after :data:`RESEED_INTERVAL` updates or :data:`RESEED_BYTES` bytes the state
  is XORed with 48 fresh bytes of ``os.urandom``, and in a child process after ``fork``
  (the pid is checked on every call) so that two processes never share a stream.

The output is indistinguishable from random as long as AES-256 is a pseudorandom
permutation; one key produces at most ~1 MiB, far below the 2**64-block bound of counter
mode.  Keys drawn here are still one-time-pad
encrypted on every hop; the generator only replaces the source of their bits.

:func:`random_bytes` is a process-wide generator; ``secrets.token_bytes``-compatible.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CtrDrbg", "REKEY_BYTES", "RESEED_BYTES", "RESEED_INTERVAL", "random_bytes"]

SEED_LEN = 48  # 32-byte AES-256 key + 16-byte counter block
REKEY_BYTES = 1 << 20  # output bytes under one key before the state update
RESEED_INTERVAL = 1 << 12  # state updates between reseeds (4 GiB of output)
RESEED_BYTES = 1 << 32  # output bytes between reseeds
BLOCK = 16


class CtrDrbg:
    """AES-256-CTR deterministic random bit generator, reseeded from ``os.urandom``."""

    def __init__(self, entropy=os.urandom, rekey_bytes: int = REKEY_BYTES) -> None:
        self._entropy = entropy
        self._rekey_bytes = rekey_bytes
        self._key = self._v = b""
        self._cipher = None
        self._zeros = bytearray()
        self._out = bytearray()
        self._since = self._updates = self._bytes = 0
        self._pid = -1
        self.reseeds = 0
        self.reseed()

    def __repr__(self) -> str:  # never the state
        return f"CtrDrbg(reseeds={self.reseeds})"

    def reseed(self) -> None:
        """Mix ``SEED_LEN`` fresh bytes of entropy into the state."""
        fresh = self._entropy(SEED_LEN)
        if len(fresh) != SEED_LEN:
            raise ValueError("the entropy source returned too few bytes")
        if self._cipher is not None:  # the current state: the next 48 keystream bytes
            state = self._keystream(SEED_LEN)
        else:
            state = bytes(SEED_LEN)
        self._start(bytes(a ^ b for a, b in zip(state, fresh)))
        self._updates = self._bytes = 0
        self._pid = os.getpid()
        self.reseeds += 1

    def _start(self, seed: bytes) -> None:
        """Key and counter block from ``seed`` (48 bytes); the old cipher is dropped."""
        counter = (int.from_bytes(seed[32:], "big") + 1) % (1 << 128)
        self._cipher = Cipher(algorithms.AES(seed[:32]),
                              modes.CTR(counter.to_bytes(BLOCK, "big"))).encryptor()
        self._since = 0

    def _keystream(self, n: int) -> bytes:
        if len(self._zeros) < n:
            self._zeros = bytearray(n)
            self._out = bytearray(n + BLOCK)
        self._cipher.update_into(memoryview(self._zeros)[:n], self._out)
        return bytes(memoryview(self._out)[:n])

    def generate(self, n: int) -> bytes:
        """``n`` random bytes (``n >= 0``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"byte count must be a non-negative int, got {n!r}")
        if (self._pid != os.getpid() or self._updates >= RESEED_INTERVAL
                or self._bytes >= RESEED_BYTES):
            self.reseed()
        out = self._keystream(n) if n else b""
        self._since += n
        self._bytes += n
        if self._since >= self._rekey_bytes:  # the state update (backtracking resistance)
            self._start(self._keystream(SEED_LEN))
            self._updates += 1
        return out


_GENERATOR: CtrDrbg | None = None


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the process-wide :class:`CtrDrbg` (created on first use)."""
    global _GENERATOR
    if _GENERATOR is None:
        _GENERATOR = CtrDrbg()
    return _GENERATOR.generate(n)
