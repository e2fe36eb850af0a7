"""Kills leave nothing behind: a SIGKILLed stage's workers die with it; trainers do not share
a checkpoint folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from colorization.manifest import write_manifest
from tests.conftest import random_bgr, write_image
from tests.servers import HUNG_S


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            children.setdefault(info[1], []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    """The pids still alive (a zombie is dead: it only waits for a parent to read its status)."""
    return {pid for pid in pids if (info := _stat(pid)) is not None and info[0] != "Z"}


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(interval)


def test_sigkill_of_preprocess_leaves_no_worker(tmp_path, params_dict):
    raw = tmp_path / "raw"
    write_image(raw / "images/one.png", random_bgr(256, 256))
    row = {"source": "folder", "path": "images/one.png", "width": 256, "height": 256, "sha256": "0"}
    write_manifest(raw, [{**row, "id": f"img-{i:05d}"} for i in range(6000)])  # minutes of work
    params_dict["acquire"]["out"] = str(raw)  # what preprocess reads (dvc.yaml: --raw ${acquire.out})
    params_dict["lineart"].update(out=str(tmp_path / "lineart"), image_size=32, shard_size=20, workers=2)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_dict))
    staging = tmp_path / ".lineart.partial"

    proc = subprocess.Popen(
        [sys.executable, "-m", "colorization", "preprocess", "--params", str(params)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    tree: set[int] = set()
    try:
        # Kill it at work: both workers started and shards being written.
        def at_work():
            assert proc.poll() is None, proc.stderr.read().decode()
            tree.update(descendants(proc.pid))
            return len(tree) >= 2 and staging.is_dir() and any(staging.glob("*.ids.json"))

        wait_until(at_work, HUNG_S, "preprocess workers to finish a shard")
        tree.update(descendants(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_until(
            lambda: not running(tree), 10, f"processes {sorted(running(tree))} of the killed stage to end"
        )
    finally:
        for pid in running(tree):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(tree) >= 2  # the two workers (and the resource tracker)
