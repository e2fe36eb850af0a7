"""Stages `lineart` and `histograms`: raw images -> the processed store.

Work is split into shards of the manifest and spread over processes (OpenCV is
pinned to one thread per process, so N processes use N cores without contention).
`lineart` builds in a hidden staging folder next to its output, finished shards are
kept across a killed run, and the folder is published by rename only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from colorization.atomic import atomic_save_npy, atomic_write_text, publish_dir, remove_stale_temporaries
from colorization.config import HistogramParams, LineartParams
from colorization.histogram import color_histogram
from colorization.images import read_rgb
from colorization.lineart import prepare_pair
from colorization.manifest import read_manifest
from colorization.progress import progress
from colorization.store import (
    SPLITS,
    shard_is_complete,
    shard_stem,
    split_of,
    write_histograms,
    write_index,
    write_meta,
)

log = logging.getLogger(__name__)


def worker_count(requested: int, jobs: int) -> int:
    return max(1, min(requested or os.cpu_count() or 1, jobs))


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _map(fn, jobs: list, workers: int, desc: str):
    """Ordered map over `jobs`, in-process when one worker suffices."""
    if workers <= 1 or len(jobs) <= 1:
        _init_worker()
        yield from progress(map(fn, jobs), desc, total=len(jobs), unit="shard")
        return
    ctx = __import__("multiprocessing").get_context("spawn")  # safe under threaded callers (Prefect)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
        yield from progress(pool.map(fn, jobs), desc, total=len(jobs), unit="shard")


# ---------------------------------------------------------------- lineart


def _lineart_shard(job: tuple) -> int:
    staging, shard, ids, paths, params = job
    pairs = [prepare_pair(read_rgb(p), params) for p in paths]
    stem = Path(staging) / shard_stem(shard)
    atomic_save_npy(f"{stem}.color.npy", np.stack([c for c, _ in pairs]))
    atomic_save_npy(f"{stem}.lineart.npy", np.stack([line for _, line in pairs]))
    atomic_write_text(f"{stem}.ids.json", json.dumps(ids))  # completion marker, last
    return len(ids)


def _fingerprint(params: LineartParams, shas: list[str]) -> str:
    digest = hashlib.sha256(params.model_dump_json(exclude={"workers", "out"}).encode())
    digest.update("".join(shas).encode())
    return digest.hexdigest()


def build_lineart(params: LineartParams) -> dict:
    """Resize + line art for every manifest row into shards; returns the store's meta."""
    raw, out = Path(params.raw), Path(params.out)
    manifest = read_manifest(raw).sort_by("id")
    ids = manifest["id"].to_pylist()
    if not ids:
        raise ValueError(f"{raw}: the manifest holds no images")
    paths = [str(raw / p) for p in manifest["path"].to_pylist()]
    fingerprint = _fingerprint(params, manifest["sha256"].to_pylist())

    staging = out.with_name(f".{out.name}.partial")
    stamp = staging / "fingerprint"
    if staging.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(staging)  # leftovers of other inputs or params: not ours to resume
    staging.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    remove_stale_temporaries(staging)

    size = params.shard_size
    jobs = []
    for shard, start in enumerate(range(0, len(ids), size)):
        shard_ids = ids[start : start + size]
        if not shard_is_complete(staging, shard, shard_ids):
            jobs.append((str(staging), shard, shard_ids, paths[start : start + size], params))
    skipped = -(-len(ids) // size) - len(jobs)
    if skipped:
        log.info("lineart: resuming, %d finished shards kept", skipped)
    for _ in _map(_lineart_shard, jobs, worker_count(params.workers, len(jobs)), "lineart"):
        pass

    positions = np.arange(len(ids))
    splits = [split_of(i, params.split.val, params.split.test) for i in ids]
    write_index(staging, ids, (positions // size).tolist(), (positions % size).tolist(), splits)
    meta = {
        "image_size": params.image_size,
        "count": len(ids),
        "splits": {s: splits.count(s) for s in SPLITS},
        "extractor": params.extractor,
        "fingerprint": fingerprint,
    }
    write_meta(staging, meta)
    stamp.unlink()
    publish_dir(staging, out)
    return meta


# ---------------------------------------------------------------- histograms


def _histogram_chunk(paths: list[str]) -> np.ndarray:
    return np.stack([color_histogram(read_rgb(p)) for p in paths])


def build_histograms(params: HistogramParams, chunk: int = 128) -> int:
    """512-bin colour hint of every raw image (full resolution), into one Parquet file."""
    raw = Path(params.raw)
    manifest = read_manifest(raw).sort_by("id")
    ids = manifest["id"].to_pylist()
    if not ids:
        raise ValueError(f"{raw}: the manifest holds no images")
    paths = [str(raw / p) for p in manifest["path"].to_pylist()]
    jobs = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    parts = list(_map(_histogram_chunk, jobs, worker_count(params.workers, len(jobs)), "histograms"))
    write_histograms(Path(params.out), ids, np.concatenate(parts))
    return len(ids)
