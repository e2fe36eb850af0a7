"""Preprocessing throughput against its floor, decoding alone.

    python bench/preprocess.py [--images 200] [--size 512] [--workers 0]

Generates N JPEGs (synthetic illustrations), then times on the same files, in the
same run: (1) decode only -- the floor, since every image must be decoded once;
(2) the full per-image work of the lineart + histograms stages: decode, resize,
Canny, 512-bin histogram; (3) the full work spread over all cores by the stages'
own process pool. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from colorization.config import load_params
from colorization.histogram import color_histogram
from colorization.images import decode_rgb, encode_jpeg
from colorization.lineart import prepare_pair
from colorization.sources.synthetic import render

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def decode_only(paths: list[str]) -> int:
    for p in paths:
        cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR)
    return len(paths)


def full_work(job: tuple[list[str], int]) -> int:
    paths, size = job
    params = PARAMS.lineart.model_copy(update={"image_size": size})
    for p in paths:
        rgb = decode_rgb(Path(p).read_bytes())
        prepare_pair(rgb, params)
        color_histogram(rgb)
    return len(paths)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="side of the generated JPEGs and of the output")
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    parser.add_argument(
        "--grain",
        type=float,
        default=0.0,
        help="std of Gaussian grain added before encoding: flat synthetic JPEGs decode far faster "
        "than real illustrations, whose texture grain imitates",
    )
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.images):
            path = Path(tmp) / f"{i:05d}.jpg"
            rgb = render(i, 0, args.size).rgb
            if args.grain:
                noise = np.random.default_rng(i).normal(0, args.grain, rgb.shape)
                rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
            path.write_bytes(encode_jpeg(rgb))
            paths.append(str(path))
        decode_only(paths[:10])  # warm the page cache and OpenCV
        t_decode = timed(decode_only, paths)
        t_full = timed(full_work, (paths, args.size))
        chunks = [(paths[i::workers], args.size) for i in range(workers)]
        ctx = get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=cv2.setNumThreads, initargs=(1,))
        with pool:
            list(pool.map(full_work, [(paths[:2], args.size)] * workers))  # start the workers first
            start = time.perf_counter()
            list(pool.map(full_work, chunks))
            t_pool = time.perf_counter() - start

    n = args.images
    rows = [
        ("decode only (floor)", 1, n / t_decode, 1.0),
        ("decode+resize+canny+hist", 1, n / t_full, t_full / t_decode),
        (f"same, {workers} processes", workers, n / t_pool, t_pool * workers / t_decode),
    ]
    print(f"{n} JPEGs at {args.size}px, grain {args.grain}, canny at {args.size}px, {os.cpu_count()} cores")
    print(f"{'work':<28}{'procs':>6}{'img/s':>10}{'img/s/core':>12}{'x floor':>9}")
    for name, procs, rate, ratio in rows:
        print(f"{name:<28}{procs:>6}{rate:>10.1f}{rate / procs:>12.1f}{ratio:>9.2f}")


if __name__ == "__main__":
    main()
