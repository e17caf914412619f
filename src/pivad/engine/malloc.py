"""glibc malloc settings for long CPU inference runs (``pivad detect``, ``pivad extract rgb``).

I3D allocates and frees activations of 10-50 MB for every clip. glibc gives blocks of that size their
own ``mmap`` and returns them to the system when freed, or trims the heap's freed top, so each clip
pays for faulting fresh zeroed pages in again; how often depends on what the process allocated before
(loading a π-VAD checkpoint first made I3D 12 % slower, with twice the page faults). Fixing the mmap
threshold at its 32 MB maximum and keeping freed memory in the heap removes those faults: I3D ran at
64 frames/s of video either way (docs/detect.md). Resident memory then stays at its peak until exit,
which is what a process that scores video after video reuses anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's upper limit on 64-bit systems
KEEP_FREED = 2**31 - 1  # mallopt takes an int: trim only when this much is free at the heap's top


def keep_freed_memory() -> bool:
    """Set the mmap threshold to 32 MB and stop trimming the heap; True where glibc took both settings
    (False elsewhere: other C libraries and systems keep their defaults)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED))
