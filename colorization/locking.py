"""One writer per folder: an exclusive advisory lock (fcntl.flock) that the kernel drops when its holder
exits, however it exits; the lock file stays (removing it would race with a waiting locker)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "lock"


class FolderBusy(RuntimeError):
    """Another process holds the folder's lock; the message is one line naming its PID."""


class FolderLock:
    """Held from construction until `release()` (or until the process ends)."""

    def __init__(self, folder: str | os.PathLike, holder: str = "process") -> None:
        self.fd: int | None = None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusy(
                f"{folder} is in use by another {holder} (PID {pid}); wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __del__(self) -> None:
        self.release()


class NoLock:
    """Stands in for FolderLock where another process (DDP rank 0) holds it."""

    def release(self) -> None: ...
