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
    monkeypatch.setattr(memory, "_libc_function", lambda name, *argtypes: None)
    assert memory.release_free_memory() is False


_CHURN = """
import ctypes, ctypes.util, sys
from pathlib import Path
from appliance.runtime import memory

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "pinned":
    assert memory.fix_mmap_threshold()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 16 << 20
first = libc.malloc(size)
libc.memset(first, 1, size)
libc.free(first)  # unpinned, glibc now serves blocks this large from the heap
big = libc.malloc(size)
libc.memset(big, 1, size)
small = libc.malloc(64)  # above it in the heap: the heap cannot shrink past it
before = rss()
libc.free(big)
print(before - rss())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.parametrize(("mode", "released"), [("pinned", True), ("dynamic", False)])
def test_a_pinned_mmap_threshold_gives_a_freed_large_buffer_back(mode: str, released: bool) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
    freed_mib = float(out.stdout)
    assert (freed_mib > 12) is released, freed_mib
