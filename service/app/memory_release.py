"""Give a finished study's memory back to the operating system (glibc's malloc).

A study allocates many buffers of 0.1-1 MB (one per slice: encoded pixels, per-slice arrays).
glibc serves those from ``mmap`` at first, but each ``free`` of an mmapped block raises its
"mmap threshold" to that block's size, so later slices come from the heap instead, where freed
memory mostly stays with the process. Fixing the threshold at glibc's initial 128 KiB keeps
every such buffer mmapped: pixels dropped after the volume is built, and a whole study after
it is answered, leave the resident set at once. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

__all__ = ["MMAP_THRESHOLD_BYTES", "keep_large_buffers_mmapped"]

log = logging.getLogger(__name__)

#: glibc's default initial threshold; allocations at least this large are mmapped.
MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # from <malloc.h>
_lock = threading.Lock()
_done: bool | None = None


def keep_large_buffers_mmapped() -> bool:
    """Fix glibc's mmap threshold once per process; True when it is in effect."""
    global _done
    with _lock:
        if _done is None:
            _done = _set_threshold()
        return _done


def _set_threshold() -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    log.debug("glibc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, ok)
    return ok
