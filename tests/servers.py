"""Helpers for tests that start real servers on 127.0.0.1: ports, readiness, shutdown."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import requests

# How long a child process may take before it counts as hung. Generous on purpose: it only
# ends a test that would otherwise never end, and never decides a result on a slow machine.
HUNG_S = 900


def free_port() -> int:
    """A port that was free a moment ago. Racy (another process may bind it before the server
    does): use it only where a collision fails loudly, and prefer `bind 0 and report`
    (`uvicorn_port`, `ThreadedMotoServer(port=0)`, `torchrun --standalone`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def refused_port():
    """A loopback port where nothing listens, for as long as the block runs: it is bound here
    and never listened on, so no other process can take it and connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


UVICORN_STARTED = re.compile(r"Uvicorn running on https?://[^:/\s]+:(\d+)")


def uvicorn_port(proc: subprocess.Popen, log: Path, timeout: float = HUNG_S) -> int:
    """The port a server started with `--port 0` bound, read from uvicorn's start line in `log`.

    uvicorn writes that line once its socket listens, with the port the kernel gave it, so
    no other process can have taken the port in between.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := UVICORN_STARTED.search(log.read_text(errors="replace") if log.exists() else ""):
            return int(found.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n" + log.read_text()[-3000:])
        time.sleep(0.1)
    raise TimeoutError(f"no uvicorn start line in {log} after {timeout}s")


def wait_healthy(url: str, proc: subprocess.Popen, log: Path | None = None, timeout: float = 90.0) -> None:
    """Poll `{url}/health` until it answers 200; fail early if the server process exits."""
    tail = (lambda: ":\n" + log.read_text()[-3000:]) if log else (lambda: "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}{tail()}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not healthy after {timeout}s{tail()}")


def stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the server's process group (servers fork workers), SIGKILL it if it does not go."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()
