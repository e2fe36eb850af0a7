"""Preprocessing (lineart + histograms) throughput through the Prefect flow on 1 vs N Dask workers.

    python bench/preprocess_dask.py [--images 800] [--size 128] [--workers 1 2]

Acquires N synthetic images (params.yaml otherwise), then for each worker count starts a
LocalCluster (one thread per worker, processes, as `pipeline.task_runner: dask` does), and
times the `lineart` and `histograms` subflows with their shards mapped over it, twice:
cold (the workers' first tasks import Prefect and OpenCV) and warm. Cluster start-up is
timed apart. The local run (`build_*`, the stages' own process pool) is the
reference. Prints images/s; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from colorization.acquire import run_acquire
from colorization.config import load_params
from colorization.preprocess import build_histograms, build_lineart

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=128, help="side of the synthetic raw images")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import histograms_stage, lineart_stage, on_runner, preprocessing_runner

    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        os.chdir(tmp)
        params = load_params(
            REPO / "params.yaml",
            {
                "acquire.synthetic.count": args.images,
                "acquire.synthetic.size": args.size,
                "acquire.out": "raw",
                "lineart.raw": "raw",
                "histograms.raw": "raw",
                "pipeline.task_runner": "dask",
            },
        )
        run_acquire(params.acquire)
        n = args.images
        print(f"{n} images, {args.size} px raw -> {params.lineart.image_size} px, {os.cpu_count()} cores")

        def outs(tag: str):
            return (
                params.lineart.model_copy(update={"out": f"{tag}/lineart"}),
                params.histograms.model_copy(update={"out": f"{tag}/histograms.parquet"}),
            )

        lineart, histograms = outs("local")
        start = time.perf_counter()
        build_lineart(lineart)
        build_histograms(histograms)
        elapsed = time.perf_counter() - start
        print(f"local process pool (workers=0): {elapsed:6.2f} s  {n / elapsed:7.1f} images/s")

        for workers in args.workers:
            settings = params.pipeline.model_copy(update={"dask_workers": workers})
            start = time.perf_counter()
            with preprocessing_runner(settings) as runner:
                up = time.perf_counter() - start
                for run in ("cold", "warm"):  # cold: the worker processes import prefect, cv2 first
                    lineart, histograms = outs(f"dask{workers}-{run}")
                    start = time.perf_counter()
                    on_runner(lineart_stage, runner)(lineart, sharded=True)
                    on_runner(histograms_stage, runner)(histograms, sharded=True)
                    elapsed = time.perf_counter() - start
                    print(
                        f"dask, {workers} worker(s), {run}: {elapsed:6.2f} s  {n / elapsed:7.1f} images/s"
                        f"  (cluster start {up:.1f} s, not counted)"
                    )


if __name__ == "__main__":
    main()
