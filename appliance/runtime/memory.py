"""Give freed heap back to the system between conversations.

A session allocates and frees hundreds of MiB in many threads (ONNX runtime, CTranslate2,
llama.cpp, numpy). glibc keeps freed memory in its per-thread arenas, so a device that runs for
months shows the highest mark of its busiest session, and fragmentation lets that mark creep.
`malloc_trim(0)` returns the free top of every arena and unused whole pages to the kernel. It
costs a few milliseconds and runs once per finished session, when nothing is speaking.

Before the models load, `fix_mmap_threshold()` pins glibc's mmap threshold at 128 KiB. glibc
raises that threshold each time a large mmapped block is freed (up to 32 MiB), after which audio
buffers, model tensors and numpy arrays of that size come from the arenas instead, fragment them,
and stay resident after they are freed: the soak's RSS climbed by ~100 MiB over its first hours
that way. Pinned, a large buffer is its own mapping and goes back to the system when it is freed.

On a C library without `malloc_trim` or `mallopt` (musl, macOS) both do nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable
from typing import Any, cast

_LOGGER = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024


@functools.cache
def _libc_function(name: str, *argtypes: Any) -> Callable[..., int] | None:
    """The C library's function `name` (returning int, taking `argtypes`), or None without it."""
    path = ctypes.util.find_library("c")
    try:
        fn = getattr(ctypes.CDLL(path), name, None) if path else None
    except OSError:
        fn = None
    if fn is None:
        _LOGGER.debug("%s is not in the C library: freed memory stays with the allocator", name)
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return cast("Callable[..., int]", fn)


def release_free_memory() -> bool:
    """Return freed heap memory to the system. True when the C library did it (glibc's
    `malloc_trim` returns 1 when it released something, 0 when there was nothing to release),
    False when the C library cannot."""
    trim = _libc_function("malloc_trim", ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold (and so switch off its dynamic raising). True when set."""
    mallopt = _libc_function("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, threshold))
