"""Processes that do not outlive their owner (no-ops elsewhere than Linux), and that keep freed
memory for the next image. A pool worker dies with its parent (PR_SET_PDEATHSIG); a stage under
DVC, and DVC under the flow, watch their owners' pidfds (`die_with`): PDEATHSIG fires when the
forking *thread* ends, and only for the direct parent (DVC runs a stage through `$SHELL -c`)."""

from __future__ import annotations

import ctypes
import os
import runpy
import select
import signal
import sys
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>, glibc
DVC_STAGE_ENV = "DVC_STAGE"  # DVC sets it for a stage's command (and the shell it runs it in)


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


def ancestors(pid: int) -> list[int]:
    """`pid`'s parent, its parent, ... up to (not including) pid 1 or 0, or one /proc cannot show."""
    found = []
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return found
        if (pid := int(stat[stat.rindex(")") + 2 :].split()[1])) <= 1:  # the name in (...) may hold spaces
            return found
        found.append(pid)


def die_with(*owners: int) -> bool:
    """SIGKILL this process as soon as any of `owners` (its ancestors) has ended; at once if one
    is gone (or its pid reused). False where it cannot watch (no pidfd: not Linux, kernel < 5.3)."""
    if not owners or not hasattr(os, "pidfd_open"):
        return False
    fds = []
    try:
        for owner in owners:
            fds.append(os.pidfd_open(owner))
    except ProcessLookupError:
        _die()
    except OSError:  # no pidfd support in this kernel
        for fd in fds:
            os.close(fd)
        return False
    if not set(owners) <= set(ancestors(os.getpid())):  # checked after the pidfds hold them
        _die()
    threading.Thread(target=_die_when_any_ends, args=(fds,), name="die-with-owner", daemon=True).start()
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_when_any_ends(fds: list[int]) -> None:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)  # a pidfd is readable once its process has ended
    poller.poll()
    _die()


def die_with_stage_runners() -> None:
    """A DVC stage's command ends with the shells that run it (they carry DVC_STAGE, as we do) or DVC,
    the first ancestor without it (the CLI calls this first); nothing outside a DVC stage."""
    stage = os.environ.get(DVC_STAGE_ENV)
    if stage is None or not sys.platform.startswith("linux"):
        return
    entry, runners = f"{DVC_STAGE_ENV}={stage}".encode(), []
    for ancestor in ancestors(os.getpid()):
        runners.append(ancestor)
        try:
            if entry not in Path(f"/proc/{ancestor}/environ").read_bytes().split(b"\0"):
                break  # DVC, or whatever ran the command with DVC_STAGE set
        except OSError:  # not ours to read: stop here
            break
    die_with(*runners)


def retain_freed_memory(mmap_below: int = 32 * 2**20, trim_above: int = 128 * 2**20) -> bool:
    """Ask glibc to serve blocks under `mmap_below` from the heap and keep up to `trim_above` bytes of
    freed heap (True when set): a worker's per-image blocks (2.6 MB at 512 px) would otherwise come
    back as fresh zeroed pages, a third of the decode. For a stage's workers, not a long-lived host."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_below)) and bool(mallopt(M_TRIM_THRESHOLD, trim_above))


# python -m colorization.processes OWNER_PID MODULE [ARGS...]: how the flow runs dvc
if __name__ == "__main__":
    die_with(int(sys.argv[1]))
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
