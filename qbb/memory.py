"""Process memory settings for long-running node processes (glibc malloc).

Node processes (``qbb.nodeproc``, ``qbb.bench.relay_node``) call :func:`tune_malloc` at
start: the key stores' buffers shrink and grow with every frame, and glibc's defaults
(``mmap`` for large blocks, trimming the heap top) turn that into page faults at every
first touch (docs/benchmarks-relay.md, "page faults").
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["tune_malloc"]

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


def tune_malloc() -> bool:
    """Keep freed heap memory in the process (glibc only; ``False`` elsewhere).

    A first touch of a page costs a page fault, about 7 us on the shared VM the figures
    come from; glibc serves blocks above 32 MB with a fresh ``mmap`` and gives memory back
    to the kernel when the heap top is free, so the key stores' ``bytearray`` -- which
    re-allocates and copies itself whenever it shrinks to half (CPython) -- faulted
    16-32 pages per relayed 57 KB frame.  No mmap and no trimming: the freed blocks are
    reused (``docs/benchmarks-relay.md``, "page faults")."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                      (1 << 31) - 1))
    except (OSError, AttributeError):
        return False
