"""Keeping a long-running process's memory from ratcheting up from one pass to the next.

A pass over a million jobs allocates a few large blocks (the snapshot's dict, the lists that
compare it with the database) and frees them when it ends. glibc serves a block over 128 KiB
with ``mmap`` and unmaps it when freed, but every time it unmaps one it raises that threshold to
the block's size (up to 32 MiB): from the second pass on, the same blocks come from the heap,
which glibc keeps. A pass in the daemon, which runs every pass in one process, must peak no
higher than the same pass in a process of its own (docs/benchmarks.md has the figures).
Setting the threshold explicitly, at its default, turns the adjustment off (as
``MALLOC_MMAP_THRESHOLD_`` would).

``jobsync sync`` sets it too, though it makes one round of passes: a pass frees large blocks
before its write (what chose its progress requests), and with the threshold raised by earlier
frees they would stay in the heap, under the write's own peak.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_large_blocks_unmapped"]

# From glibc's malloc.h.
M_MMAP_THRESHOLD = -3
DEFAULT_MMAP_THRESHOLD = 128 * 1024


def keep_large_blocks_unmapped() -> bool:
    """Fix glibc's mmap threshold at its default; False where there is no glibc to tell."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0.
    return bool(mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD))
