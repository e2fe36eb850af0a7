"""Preprocessing throughput against its floor, decoding alone.

    python bench/preprocess.py [--images 200] [--size 512] [--grain 6] [--workers 0]

Generates N JPEGs (synthetic illustrations, with grain so that they decode like real
ones), acquires them as a folder source, then times on the same raw files, in the same
run: (1) decode only -- the floor, since every image must be decoded once; (2) the
`preprocess` stage itself (`build_preprocess`: one decode per image, full-size histogram,
resize, line art, shards written and published) on one process; (3) the same stage on
all cores. Prints a table with each row's ratio to the floor, by wall time and by CPU time
(the latter holds on a machine others are using too); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from colorization.acquire import run_acquire
from colorization.config import load_params
from colorization.images import encode_jpeg
from colorization.manifest import read_manifest
from colorization.preprocess import build_preprocess
from colorization.sources.synthetic import render

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="side of the generated JPEGs and of the output")
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    parser.add_argument("--image-size", type=int, default=None, help="line-art side (default: --size)")
    parser.add_argument(
        "--grain",
        type=float,
        default=6.0,
        help="std of Gaussian grain added before encoding: flat synthetic JPEGs decode far faster "
        "than real illustrations, whose texture grain imitates",
    )
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    out_size = args.image_size or args.size
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root / "inbox", args.images, args.size, args.grain)
        one = stage_params(root, out_size, 1, "one")
        run_acquire(one.acquire)
        raw = Path(one.acquire.out)
        paths = [str(raw / p) for p in read_manifest(raw)["path"].to_pylist()]
        decode_only(paths[:10])  # warm the page cache and OpenCV
        t_decode = timed(decode_only, paths)
        t_full = timed(build_preprocess, raw, one.lineart, one.histograms)
        many = stage_params(root, out_size, workers, "many")
        t_pool = timed(build_preprocess, raw, many.lineart, many.histograms)

    n = args.images
    (wall_decode, cpu_decode), (wall_full, cpu_full), (wall_pool, cpu_pool) = t_decode, t_full, t_pool
    rows = [
        ("decode only (floor)", 1, wall_decode, cpu_decode, 1.0),
        ("preprocess stage", 1, wall_full, cpu_full, wall_full / wall_decode),
        (f"same, {workers} processes", workers, wall_pool, cpu_pool, wall_pool * workers / wall_decode),
    ]
    print(f"{n} JPEGs at {args.size}px, grain {args.grain}, line art at {out_size}px, {os.cpu_count()} cores")
    print(f"{'work':<28}{'procs':>6}{'img/s':>10}{'img/s/core':>12}{'x floor':>9}{'x floor (CPU s)':>17}")
    for name, procs, wall, cpu, ratio in rows:
        rate = n / wall
        print(f"{name:<28}{procs:>6}{rate:>10.1f}{rate / procs:>12.1f}{ratio:>9.2f}{cpu / cpu_decode:>17.2f}")


if __name__ == "__main__":
    main()
