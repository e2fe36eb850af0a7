"""Worker processes that do not outlive the process that started them, and that keep
the memory they free for the next image.

A `kill -9` of a stage gives its pool no chance to shut down: the workers, blocked on
their task queue, and multiprocessing's resource tracker (which waits for the workers'
end of its pipe) would stay forever. On Linux a worker asks the kernel to SIGKILL it
when its parent dies (prctl PR_SET_PDEATHSIG); the tracker then sees its pipe close and
ends too. Elsewhere this is a no-op: the pool's own shutdown is all there is.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>, glibc


def die_with_parent(parent_pid: int | None) -> None:
    """Call first in a pool worker's initializer, with the pid of the process that made the pool."""
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


def retain_freed_memory(mmap_below: int = 32 * 2**20, trim_above: int = 128 * 2**20) -> bool:
    """Ask glibc to serve blocks under `mmap_below` from the heap and to keep up to
    `trim_above` bytes of freed heap instead of returning it to the kernel.

    A worker allocates and frees the same few blocks for every image (the decoded picture,
    its grey copy, the gradients: 2.6 MB at 512 px). With glibc's defaults those blocks go
    back to the kernel on free and come back as fresh pages, faulted in and zeroed one
    4 kB page at a time: measured 0.3-0.4 ms per 512 px image on a VM, a third of the
    decode. The price: the process keeps up to `trim_above` of freed memory, so this is for
    a process that does this work (the stage's own, its workers), not for a long-lived
    host. True when set; elsewhere (not glibc) a no-op.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_below)) and bool(mallopt(M_TRIM_THRESHOLD, trim_above))
