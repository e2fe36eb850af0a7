"""Preprocessing cost against its floor, decoding alone.

    python bench/preprocess.py [--images 300] [--size 512] [--image-size 64 512] [--grain 6]
                               [--workers 0] [--repeat 3]

Generates N JPEGs (synthetic illustrations, with grain so that they decode like real
ones), acquires them as a folder source, then times on the same raw files, in the same
run: (1) decode only -- the floor, since every image must be decoded once; (2) the
`preprocess` stage itself (`build_preprocess`: one decode per image, full-size histogram,
resize, line art, shards written and published) on one process, for each line-art size;
(3) the same stage on all cores. Rounds of (1) and (2) alternate `--repeat` times and each
row keeps its cheapest round: on a machine others are using, a round's cost varies with
their load, and the cheapest is the one least disturbed.

Prints two tables, asserting nothing: each row's ratio to the floor, by wall time and by
CPU time (this process and its workers; the one that holds on a shared machine), with the
cost of starting the pool's processes alone (a fixed cost, which a few hundred images do
not amortise), and the CPU cost per image of each step of a shard, in the order
`run_shard` does them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from colorization.acquire import run_acquire
from colorization.config import LineartParams, load_params
from colorization.histogram import color_histogram
from colorization.images import decode_rgb, encode_jpeg, read_image_bytes
from colorization.lineart import extract_lineart, resize_square
from colorization.manifest import read_manifest
from colorization.preprocess import _map, build_preprocess
from colorization.sources.synthetic import render
from colorization.store import npy_rows

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
STEPS = ("read file", "decode", "histogram (full size)", "resize", "line art", "write shard rows")


def decode_only(paths: list[str]) -> int:
    for p in paths:
        cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR)
    return len(paths)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the stage's worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, *args) -> tuple[float, float]:
    """(wall, CPU) seconds: on a shared machine the CPU time is the one that does not count
    the other processes' load."""
    start, cpu = time.perf_counter(), cpu_seconds()
    fn(*args)
    return time.perf_counter() - start, cpu_seconds() - cpu


def cheapest(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The least disturbed of several rounds: (min wall, min CPU)."""
    return min(w for w, _ in runs), min(c for _, c in runs)


def write_jpegs(folder: Path, images: int, size: int, grain: float) -> None:
    folder.mkdir(parents=True)
    for i in range(images):
        rgb = render(i, 0, size).rgb
        if grain:
            noise = np.random.default_rng(i).normal(0, grain, rgb.shape)
            rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
        (folder / f"{i:05d}.jpg").write_bytes(encode_jpeg(rgb))


def stage_params(root: Path, size: int, workers: int, out: str):
    return load_params(
        PARAMS_FILE,
        {
            "acquire.source": "folder",
            "acquire.folder.input": str(root / "inbox"),
            "acquire.out": str(root / "raw"),
            "lineart.image_size": size,
            "lineart.workers": workers,
            "lineart.out": str(root / out / "lineart"),
            "histograms.out": str(root / out / "histograms.parquet"),
        },
    )


def run_stage(root: Path, size: int, workers: int) -> tuple[float, float]:
    params = stage_params(root, size, workers, "out")
    shutil.rmtree(root / "out", ignore_errors=True)  # a fresh build, not a resumed one
    return timed(build_preprocess, params.acquire.out, params.lineart, params.histograms)


def start_workers(workers: int) -> None:
    """The stage's pool with nothing to do: its processes spawn, import, and end."""
    for _ in _map(abs, [0] * workers, workers, "start"):
        pass


def step_seconds(paths: list[str], params: LineartParams, folder: Path) -> dict[str, float]:
    """CPU seconds of each step of a shard, summed over `paths`: the calls `run_shard` makes, in
    its order, with this thread's clock read between them (publishing the files counts as a write)."""
    clock, side, n = time.thread_time, params.image_size, len(paths)
    spent = dict.fromkeys(STEPS, 0.0)
    colours, lines = (
        npy_rows(folder / "c.npy", (n, side, side, 3)),
        npy_rows(folder / "l.npy", (n, side, side)),
    )
    start = clock()
    with colours as add_colour, lines as add_line:
        spent["write shard rows"] += clock() - start
        for path in paths:
            t0 = clock()
            data = read_image_bytes(path, params.max_file_bytes)
            t1 = clock()
            rgb = decode_rgb(data, max_pixels=params.max_pixels)
            t2 = clock()
            color_histogram(rgb)
            t3 = clock()
            colour = resize_square(rgb, side, params.resize)
            t4 = clock()
            line = extract_lineart(colour, params)
            t5 = clock()
            add_colour(colour)
            add_line(line)
            t6 = clock()
            for step, (a, b) in zip(
                STEPS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)), strict=True
            ):
                spent[step] += b - a
        start = clock()
    spent["write shard rows"] += clock() - start
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="side of the generated JPEGs")
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    parser.add_argument(
        "--image-size", type=int, nargs="+", default=None, help="line-art sides to time (default: --size)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each row keeps its cheapest")
    parser.add_argument(
        "--grain",
        type=float,
        default=6.0,
        help="std of Gaussian grain added before encoding: flat synthetic JPEGs decode far faster "
        "than real illustrations, whose texture grain imitates",
    )
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    sizes = args.image_size or [args.size]
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root / "inbox", args.images, args.size, args.grain)
        acquired = stage_params(root, sizes[0], 1, "out")
        run_acquire(acquired.acquire)
        raw = Path(acquired.acquire.out)
        paths = [str(raw / p) for p in read_manifest(raw)["path"].to_pylist()]
        decode_only(paths[:10])  # warm the page cache and OpenCV
        floor_runs, one_runs = [], {s: [] for s in sizes}
        steps = {s: dict.fromkeys(STEPS, float("inf")) for s in sizes}
        for _ in range(args.repeat):
            floor_runs.append(timed(decode_only, paths))
            for s in sizes:
                one_runs[s].append(run_stage(root, s, 1))
                rows_dir = Path(tempfile.mkdtemp(dir=root))
                spent = step_seconds(paths, stage_params(root, s, 1, "out").lineart, rows_dir)
                shutil.rmtree(rows_dir)
                steps[s] = {k: min(steps[s][k], spent[k]) for k in STEPS}
        pool = {s: cheapest([run_stage(root, s, workers) for _ in range(args.repeat)]) for s in sizes}
        start = cheapest([timed(start_workers, workers) for _ in range(args.repeat)])

    n = args.images
    wall_floor, cpu_floor = cheapest(floor_runs)
    rows = [("decode only (floor)", 1, wall_floor, cpu_floor)]
    for s in sizes:
        rows.append((f"preprocess, line art {s}px", 1, *cheapest(one_runs[s])))
        rows.append((f"  same, {workers} processes", workers, *pool[s]))
    rows.append((f"  of which starting {workers} processes", workers, *start))
    print(
        f"{n} JPEGs at {args.size}px, grain {args.grain}, {os.cpu_count()} cores, "
        f"cheapest of {args.repeat} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'work':<30}{'procs':>6}{'img/s/core':>12}{'x floor (wall)':>16}{'x floor (CPU s)':>17}")
    for name, procs, wall, cpu in rows:
        rate = "-" if name.strip().startswith("of which") else f"{n / wall / procs:.1f}"
        wall_ratio, cpu_ratio = wall * procs / wall_floor, cpu / cpu_floor
        print(f"{name:<30}{procs:>6}{rate:>12}{wall_ratio:>16.2f}{cpu_ratio:>17.2f}")

    floor_ms = cpu_floor / n * 1e3
    print(f"\nCPU ms per image, each step of a shard (cheapest round), against the floor's {floor_ms:.2f} ms")
    print(f"{'step':<30}" + "".join(f"{f'{s}px ms':>10}{'x floor':>9}" for s in sizes))
    table = [(step, [steps[s][step] for s in sizes]) for step in STEPS]
    table.append(("sum of the steps", [sum(steps[s].values()) for s in sizes]))
    table.append(("the stage (plan, shards, publish)", [cheapest(one_runs[s])[1] for s in sizes]))
    for name, values in table:
        print(f"{name:<30}" + "".join(f"{v / n * 1e3:>10.3f}{v / cpu_floor:>9.2f}" for v in values))


if __name__ == "__main__":
    main()
