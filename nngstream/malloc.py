"""Process-wide allocator settings for the buffer process (glibc only; a no-op elsewhere).

Every message is a fresh allocation of its size (NNG allocates each received message,
acked delivery copies each one). By default glibc hands freed memory at the top of a
heap back to the kernel (`M_TRIM_THRESHOLD`, 128 KiB, raised dynamically) and serves
large blocks with mmap (`M_MMAP_THRESHOLD`), so with MiB-sized messages the next message
often lands on fresh pages and pays a page fault per 4 KiB. Fixing both thresholds
keeps freed message memory for the next messages instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # blocks below this come from heaps, not mmap
TRIM_THRESHOLD = 256 * 1024 * 1024  # free memory a heap keeps before returning it


def reuse_freed_memory() -> bool:
    """Set the thresholds (module doc); False if the C library has no `mallopt`."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
