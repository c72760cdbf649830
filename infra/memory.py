"""The flow process's memory: its peak so far, and giving the allocator's free pages back.

A long run's flow process allocates and frees through ~150 threads (Prefect's task threads, Delta's
Rust runtime, Ray's clients). glibc keeps what a thread's arena freed for later use, so the resident
size kept rising slowly over a 52,002-pair run although the live objects did not (the Python heap
stayed flat under tracemalloc): ``malloc_trim(0)`` on that process, 36 minutes in, gave back 79 MB
of its 1,142 (docs/performance.md). ``trim_heap`` does that between shards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from functools import cache
from typing import Any


def peak_rss_mb() -> int:
    """This process's peak resident memory so far, in MB (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak / 1024 / (1024 if sys.platform == "darwin" else 1))


@cache
def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def trim_heap() -> bool:
    """Return the C allocator's free memory to the system (glibc); False where there is none to ask."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
