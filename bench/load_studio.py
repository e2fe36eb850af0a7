"""The studio under load: N concurrent large uploads at a real `colorization studio` on 127.0.0.1.

Starts the studio (its own process, a free port), colours one upload alone (loads the models,
and gives the time of one colouring), then fires `--requests` uploads of a `--size` square
line art (drawn in memory) at once, all methods each, and prints: answered (200 or 503),
coloured (200), shed (503, with their Retry-After), the slowest of each, and the peak RSS of
the server process (VmHWM from /proc; elsewhere psutil's RSS, sampled). An upload can wait for
at most ceil((concurrency + queue) / concurrency) rounds of colouring; the table prints that
bound (in rounds of the fastest 200: those were coloured at once) next to the slowest 200.

    python bench/load_studio.py                                  # 24 x 4000², the cores, 2 x queue
    python bench/load_studio.py --requests 16 --concurrency 1 --queue 32   # the old single lock
    python bench/load_studio.py --models models                  # trained models (default: tiny ones)

The default models are the tests' tiny untrained ones: at 4000² the time and memory are the
full-size work around the network (decode, line art, scaling the colour back, compositing,
PNG encoding), not the network. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]


def line_art_png(size: int, seed: int = 0) -> bytes:
    """A size x size drawing, black strokes on white, as PNG bytes."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 255, np.uint8)
    for _ in range(60):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 20, size // 4, 2))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, 0, max(1, size // 800))
    return cv2.imencode(".png", image)[1].tobytes()


def tiny_models(root: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.registry_fixtures import save_hint_following
    from tests.unit.test_evaluate import save_model_dir

    save_model_dir(root / "cnn", "cnn")
    save_model_dir(root / "hint", "hint")
    save_hint_following(root / "cgan")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(models: Path, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()  # racy, but a collision fails loudly below
    cmd = [sys.executable, "-m", "colorization", "studio", "--models", str(models), "--device", "cpu"]
    cmd += ["--port", str(port)]
    cmd += ["--concurrency", str(args.concurrency)] if args.concurrency else []
    cmd += ["--queue", str(args.queue)] if args.queue is not None else []
    env = os.environ | {"PYTHONPATH": str(REPO)}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(url + "/", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            time.sleep(0.2)  # polling for readiness
    proc.kill()
    raise SystemExit(f"the studio did not start:\n{log.read_text()[-2000:]}")


class PeakRss:
    """The server's peak RSS in bytes: VmHWM where /proc has it, else psutil sampled every 50 ms."""

    def __init__(self, pid: int):
        self.status = Path(f"/proc/{pid}/status")
        self.peak, self.stop = 0, threading.Event()
        if not self.status.exists():
            import psutil

            process = psutil.Process(pid)
            threading.Thread(target=self._sample, args=(process,), daemon=True).start()

    def _sample(self, process) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, process.memory_info().rss)

    def read(self) -> int:
        if self.status.exists():
            kib = next(line for line in self.status.read_text().splitlines() if line.startswith("VmHWM"))
            return int(kib.split()[1]) * 1024
        return self.peak


def upload(url: str, body: bytes) -> tuple[str, float, str]:
    """(status or the error's name, seconds, Retry-After) of one upload."""
    started = time.perf_counter()
    try:
        answer = requests.post(
            f"{url}/api/colorize", files={"image": ("art.png", body, "image/png")}, timeout=3600
        )
        status, retry = str(answer.status_code), answer.headers.get("retry-after", "")
    except requests.RequestException as err:
        status, retry = type(err).__name__, ""
    return status, time.perf_counter() - started, retry


def table(results: list[tuple[str, float, str]], alone: float, rounds: int, peak: int) -> str:
    """The first uploads admitted are coloured at once: the fastest 200 is one round at full load."""
    coloured = [s for code, s, _ in results if code == "200"]
    shed = [(s, r) for code, s, r in results if code == "503"]
    others = sorted({code for code, _, _ in results} - {"200", "503"})
    retry = sorted({r for _, r in shed})
    fastest, slowest = min(coloured, default=0.0), max(coloured, default=0.0)
    rows = [
        ("requests", f"{len(results)}"),
        ("answered (200 or 503)", f"{len(coloured) + len(shed)}"),
        ("coloured (200)", f"{len(coloured)}"),
        ("shed (503)", f"{len(shed)}, Retry-After {', '.join(retry) or '-'} s"),
        ("other answers", ", ".join(others) or "none"),
        ("one colouring alone", f"{alone:.1f} s"),
        ("fastest 200 (one round at full load)", f"{fastest:.1f} s"),
        ("slowest 200", f"{slowest:.1f} s (bound: {rounds} rounds = {rounds * fastest:.1f} s)"),
        ("slowest 503", f"{max((s for s, _ in shed), default=0):.2f} s"),
        ("peak RSS of the server", f"{peak / 2**30:.2f} GiB"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--size", type=int, default=4000, help="the line art's side, pixels")
    parser.add_argument("--models", type=Path, help="a models/ folder (default: tiny untrained models)")
    parser.add_argument("--concurrency", type=int, help="the studio's --concurrency (default: its own)")
    parser.add_argument("--queue", type=int, help="the studio's --queue (default: its own)")
    args = parser.parse_args()
    body = line_art_png(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or tiny_models(Path(tmp) / "models")
        proc, url = start_studio(models, args, Path(tmp) / "studio.log")
        try:
            peak = PeakRss(proc.pid)
            status, alone, _ = upload(url, body)
            if status != "200":
                raise SystemExit(
                    f"one upload alone answered {status}:\n{(Path(tmp) / 'studio.log').read_text()}"
                )
            with ThreadPoolExecutor(args.requests) as pool:
                results = list(pool.map(lambda _: upload(url, body), range(args.requests)))
            concurrency = args.concurrency or len(os.sched_getaffinity(0))
            queue = 2 * concurrency if args.queue is None else args.queue
            rounds = math.ceil((concurrency + queue) / concurrency)
            print(f"# {args.requests} concurrent uploads of {args.size}x{args.size} line art "
                  f"({len(body) / 2**20:.1f} MiB PNG), concurrency {concurrency}, queue {queue}, "
                  f"{os.cpu_count()} cores")  # fmt: skip
            print(table(results, alone, rounds, peak.read()))
            print(f"# load average after: {os.getloadavg()[0]:.1f}")
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
