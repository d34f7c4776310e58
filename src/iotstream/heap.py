"""Garbage-collector and allocator tuning for a server that allocates a few short-lived
objects per message and frees them a batch at a time."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 64 << 20


def tune_garbage_collection() -> None:
    """Make the collector's pauses rare once everything is started.

    The pipeline allocates a few short-lived objects per message; with the default
    thresholds the collector runs hundreds of times a second and its older generations,
    scanned now and then, pause the event loop for tens of milliseconds: the tail of the
    publish-to-WebSocket latency. Objects alive at start-up (modules, the app) are frozen
    out of collection, and collections run after 50,000 allocations instead of 700.

    The older generation is collected after 200 young collections instead of 20: the
    archiver keeps about a second of readings alive (the bus holds them until its lake
    commit), and every collection of the older generation walks them all, a ~190 ms pause
    measured at 75k msg/s. Ten times rarer, the max sustained rate with the archiver rose
    from 77-80k to 99k msg/s in the bench.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 200, 100)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep memory a batch freed for the next batch; ``False`` where
    the C library is not glibc (nothing changes there).

    The archiver builds a second of readings at a time (tens of megabytes of objects) and
    frees them together. By default glibc serves the larger of those allocations with
    ``mmap`` and gives a freed heap top back to the system, so every batch faults its
    memory in again, page by page, while holding the GIL: measured with py-spy at 70k msg/s,
    that made encoding the lake's rows take a third of the interpreter's time instead of a
    sixth. Fixed thresholds keep up to ``TRIM_THRESHOLD_BYTES`` of freed memory mapped.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        get_version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    del get_version  # present only in glibc, whose mallopt takes these parameters
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(
        M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES
    )
    if not ok:
        log.debug("mallopt refused the thresholds; the allocator keeps its defaults")
    return bool(ok)
