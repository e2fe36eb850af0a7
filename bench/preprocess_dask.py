"""Preprocessing throughput on 1 vs N Dask workers, against the stage's own process pool.

    python bench/preprocess_dask.py [--images 800] [--size 128] [--workers 1 2]

Acquires N synthetic images (params.yaml otherwise), then for each worker count starts a
LocalCluster (one thread per worker, processes, as the flow does for
`pipeline.task_runner: dask`), names it to the `preprocess` stage as the flow does
(COLORIZATION_DASK_SCHEDULER) and times the stage twice: cold (the workers' first shards
import OpenCV) and warm. Cluster start-up is timed apart. The local run (the stage's own
process pool) is the reference. Prints images/s; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from colorization.acquire import run_acquire
from colorization.config import load_params
from colorization.preprocess import DASK_SCHEDULER_ENV, build_preprocess

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=128, help="side of the synthetic raw images")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from flows.pipeline import dask_scheduler

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        params = load_params(
            REPO / "params.yaml",
            {
                "acquire.synthetic.count": args.images,
                "acquire.synthetic.size": args.size,
                "acquire.out": "raw",
                "pipeline.task_runner": "dask",
            },
        )
        run_acquire(params.acquire)
        n = args.images
        print(f"{n} images, {args.size} px raw -> {params.lineart.image_size} px, {os.cpu_count()} cores")

        def outs(tag: str):
            return (
                params.acquire.out,
                params.lineart.model_copy(update={"out": f"{tag}/lineart"}),
                params.histograms.model_copy(update={"out": f"{tag}/histograms.parquet"}),
            )

        start = time.perf_counter()
        build_preprocess(*outs("local"))
        elapsed = time.perf_counter() - start
        print(f"local process pool (workers=0): {elapsed:6.2f} s  {n / elapsed:7.1f} images/s")

        for workers in args.workers:
            settings = params.pipeline.model_copy(update={"dask_workers": workers})
            start = time.perf_counter()
            with dask_scheduler(settings) as address:
                up = time.perf_counter() - start
                os.environ[DASK_SCHEDULER_ENV] = address
                for run in ("cold", "warm"):  # cold: the worker processes import cv2 first
                    start = time.perf_counter()
                    build_preprocess(*outs(f"dask{workers}-{run}"))
                    elapsed = time.perf_counter() - start
                    print(
                        f"dask, {workers} worker(s), {run}: {elapsed:6.2f} s  {n / elapsed:7.1f} images/s"
                        f"  (cluster start {up:.1f} s, not counted)"
                    )
                del os.environ[DASK_SCHEDULER_ENV]


if __name__ == "__main__":
    main()
