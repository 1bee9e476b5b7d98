"""Keep the daemon's resident memory proportional to what it holds, not to its peaks.

glibc's malloc raises its mmap threshold each time a large mmap'ed block is freed
(up to 32 MiB) and then keeps blocks of that size, and up to twice as much free
memory, in every thread's arena. Each login's scrypt check frees a 16 MiB work
buffer, and the daemon has a thread per connection, so logins and bursts of events
to many clients left the process hundreds of MiB larger than the data it still held
(measured: 60 MiB after start, 460 MiB after a few 5000-line fan-outs to 50
clients). Fixing the threshold turns that dynamic behaviour off: large buffers are
mmap'ed and returned at once, and the RSS stays near its working size (63 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("nicos_daemon.memory")

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1024 * 1024


def limit_heap_retention() -> bool:
    """Fix glibc's mmap threshold; False where there is no glibc (nothing to do)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; memory may grow after bursts")
        return False
    return True
