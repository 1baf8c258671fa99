import ctypes
import ctypes.util
import platform
from pathlib import Path

import pytest

from appliance.runtime import memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_trim_gives_a_fragmented_heap_back() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 MiB in small blocks (below the mmap threshold, so they live in the heap), touched; a
    # block kept at the top stops glibc from trimming the heap by itself when the rest is freed:
    # the high-water mark a long-running process keeps after a busy session.
    blocks = [libc.malloc(8192) for _ in range(8192)]
    for b in blocks:
        libc.memset(b, 1, 8192)
    pin = libc.malloc(8192)
    for b in blocks:
        libc.free(b)
    before = _rss_mib()
    assert memory.release_free_memory() is True
    after = _rss_mib()
    libc.free(pin)
    assert before - after > 32, (before, after)


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_looked_up", True)
    monkeypatch.setattr(memory, "_trim", None)
    assert memory.release_free_memory() is False
