"""Giving the allocator's free pages back: what a long run's flow process does between shards."""

from __future__ import annotations

import ctypes
import sys

import pytest

from infra.memory import peak_rss_mb, trim_heap


def rss_anon_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_between_live_blocks_goes_back_to_the_system() -> None:
    """Fragmentation: every other block freed, each free one between two live ones, so glibc cannot
    shrink its heap from the top and keeps the pages until asked."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 * 1024, 1024  # 64 MB of blocks under glibc's mmap threshold: the heap's
    blocks = [libc.malloc(size) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 1, size)
    try:
        for block in blocks[::2]:
            libc.free(block)
        kept = rss_anon_mb()
        assert trim_heap()
        assert kept - rss_anon_mb() > 16  # most of the 32 MB freed is given back
    finally:
        for block in blocks[1::2]:
            libc.free(block)
    assert peak_rss_mb() >= kept
