"""Worker processes that do not outlive the process that started them.

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
