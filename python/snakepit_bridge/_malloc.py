"""glibc malloc thresholds for results of a few MiB (docs/BENCHMARKS.md,
"argument checks and typed arrays").

Why: a result of S bytes (a numpy array, bytes) is held in up to three
buffers of its size during its call — the tool's own, the serialised
response, gRPC's copy — and the last is freed by a gRPC core thread into
the arena of the thread that ran the tool. glibc's dynamic thresholds put
such blocks on the heap once one S-sized mmap has been freed, but trim a
(per-thread) heap whose free top exceeds twice that (M_TRIM_THRESHOLD,
madvise(MADV_DONTNEED)), and 3·S > 2·S: every call gave its memory back and
took it again as ~2,000 minor page faults for S = 4 MiB, most of that
call's time (measured in the worker: 34 ms of Python CPU per call against
3 ms for a bare grpcio servicer, which frees in a different order).

Fixed, bounded thresholds instead: blocks up to MMAP_THRESHOLD come from
the heap, and up to TRIM_THRESHOLD of free heap stays mapped per malloc
arena, so a call whose result is at most 8 MiB (three buffers: 24 MiB)
does not trim. Larger blocks are mmapped per call, as glibc does before
its thresholds adapt. The bound is lower than glibc's own dynamic ceiling
(mmap 32 MiB, trim 64 MiB, reached after one 32 MiB block is freed); the
cost is that a worker which has returned large results keeps up to
TRIM_THRESHOLD of free heap per arena instead of trimming it, which its
RSS (RecycleAboveRSS) shows.

Not done when SNAKEPIT_MALLOC_TUNE=0, when the environment tunes malloc
already (any MALLOC_* variable — MALLOC_ARENA_MAX as well as the
MALLOC_*_ ones — or GLIBC_TUNABLES), or when the C library is not glibc.
"""

from __future__ import annotations

import os

from . import _libc

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (glibc's dynamic default
#: starts at 128 KiB and may grow to 32 MiB).
MMAP_THRESHOLD = 8 << 20
#: Free heap per arena kept mapped before it is returned to the OS: three
#: blocks of MMAP_THRESHOLD and room for the rest of a call.
TRIM_THRESHOLD = 32 << 20


def tune_malloc() -> bool:
    """Set the thresholds; True when they were set."""
    if os.environ.get("SNAKEPIT_MALLOC_TUNE", "1").strip() == "0":
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        # The symbols already loaded into the process (libc's among them).
        mallopt = _libc.symbol("mallopt")
        _libc.symbol("gnu_get_libc_version")  # glibc only: musl's mallopt does nothing useful
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
