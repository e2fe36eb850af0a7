"""Stages `lineart` and `histograms`: raw images -> the processed store.

Work is split into shards of the manifest and spread over processes (OpenCV is
pinned to one thread per process, so N processes use N cores without contention), or,
from the Prefect flow, over a Dask cluster (`plan_*` / `run_*_shard` / `finish_*`).
Both stages build in a hidden staging folder next to their output, finished shards are
kept across a killed run, and the output is published by rename only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from colorization.atomic import atomic_save_npy, atomic_write_text, publish_dir, remove_stale_temporaries
from colorization.config import HistogramParams, LineartParams
from colorization.histogram import color_histogram
from colorization.images import ImageRejected, read_rgb
from colorization.lineart import prepare_pair
from colorization.manifest import read_manifest
from colorization.processes import die_with_parent
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
from colorization.textsafe import escaped

log = logging.getLogger(__name__)


def worker_count(requested: int, jobs: int) -> int:
    return max(1, min(requested or os.cpu_count() or 1, jobs))


def _init_worker(parent_pid: int | None = None) -> None:
    die_with_parent(parent_pid)  # a killed stage leaves no workers behind
    cv2.setNumThreads(1)


def _map(fn, jobs: list, workers: int, desc: str):
    """Ordered map over `jobs`, in-process when one worker suffices."""
    if workers <= 1 or len(jobs) <= 1:
        _init_worker()
        yield from progress(map(fn, jobs), desc, total=len(jobs), unit="shard")
        return
    ctx = __import__("multiprocessing").get_context("spawn")  # safe under threaded callers (Prefect)
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        yield from progress(pool.map(fn, jobs), desc, total=len(jobs), unit="shard")


# ---------------------------------------------------------------- lineart
#
# Each stage is split in three: `plan_*` (lists the shards still to build), `run_*_shard`
# (one shard, its output written atomically, safe to run again) and `finish_*` (joins the
# shards and publishes). `build_*` chains them on local processes; the Prefect flow maps
# the shards over its task runner (Dask) instead, so a lost worker costs one shard.


class ShardJob(NamedTuple):
    """One shard of a stage: the manifest rows `ids` (images `paths`), built into `staging`."""

    staging: str
    shard: int
    ids: list[str]
    paths: list[str]
    params: LineartParams | HistogramParams


@dataclass(frozen=True)
class ShardPlan:
    """A stage's staging folder, every manifest id in order, and the shards left to build."""

    staging: str
    ids: list[str]
    fingerprint: str
    shards: int
    jobs: list[ShardJob] = field(default_factory=list)


def _sorted_manifest(raw: Path) -> tuple[list[str], list[str], list[str]]:
    manifest = read_manifest(raw).sort_by("id")
    ids = manifest["id"].to_pylist()
    if not ids:
        raise ValueError(f"{raw}: the manifest holds no images")
    paths = [str(raw / p) for p in manifest["path"].to_pylist()]
    return ids, paths, manifest["sha256"].to_pylist()


def _fingerprint(params: LineartParams | HistogramParams, shas: list[str]) -> str:
    # Limits only refuse inputs: a store built under other limits holds the same bytes.
    unshaping = {"workers", "out", "max_pixels", "max_file_bytes"}
    digest = hashlib.sha256(params.model_dump_json(exclude=unshaping).encode())
    digest.update("".join(shas).encode())
    return digest.hexdigest()


def _open_staging(staging: Path, fingerprint: str) -> None:
    """Create `staging`, or keep it (a resumed run) when it was made for the same inputs."""
    stamp = staging / "fingerprint"
    if staging.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(staging)  # leftovers of other inputs or params: not ours to resume
    staging.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    remove_stale_temporaries(staging)


def _plan(params, size: int, is_done) -> ShardPlan:
    # Absolute paths in the jobs: a Dask worker elsewhere need not share this working directory.
    raw, out = Path(params.raw).resolve(), Path(params.out).resolve()
    ids, paths, shas = _sorted_manifest(raw)
    fingerprint = _fingerprint(params, shas)
    staging = out.with_name(f".{out.name}.partial")
    _open_staging(staging, fingerprint)
    jobs = []
    for shard, start in enumerate(range(0, len(ids), size)):
        shard_ids = ids[start : start + size]
        if not is_done(staging, shard, shard_ids):
            jobs.append(ShardJob(str(staging), shard, shard_ids, paths[start : start + size], params))
    shards = -(-len(ids) // size)
    if shards - len(jobs):
        log.info("%s: resuming, %d finished shards kept", out.name, shards - len(jobs))
    return ShardPlan(str(staging), ids, fingerprint, shards, jobs)


def plan_lineart(params: LineartParams) -> ShardPlan:
    """Open the staging folder and list the shards not yet built there."""
    return _plan(params, params.shard_size, shard_is_complete)


def read_raw(path: str, params: LineartParams | HistogramParams) -> np.ndarray:
    """A raw image within the stage's limits; else ImageRejected naming the file (one line)."""
    try:
        return read_rgb(path, max_pixels=params.max_pixels, max_file_bytes=params.max_file_bytes)
    except ImageRejected as err:
        raise ImageRejected(f"{escaped(path)}: {err}") from None


def run_lineart_shard(job: ShardJob) -> int:
    """Resize + line art of one shard; the ids file, written last, marks it complete."""
    cv2.setNumThreads(1)
    pairs = [prepare_pair(read_raw(p, job.params), job.params) for p in job.paths]
    stem = Path(job.staging) / shard_stem(job.shard)
    atomic_save_npy(f"{stem}.color.npy", np.stack([c for c, _ in pairs]))
    atomic_save_npy(f"{stem}.lineart.npy", np.stack([line for _, line in pairs]))
    atomic_write_text(f"{stem}.ids.json", json.dumps(job.ids))  # completion marker, last
    return len(job.ids)


_lineart_shard = run_lineart_shard  # what build_lineart maps (a test stands in for it)


def finish_lineart(params: LineartParams, plan: ShardPlan) -> dict:
    """Index + meta of the built shards, then publish the staging folder as `params.out`."""
    staging, ids, size = Path(plan.staging), plan.ids, params.shard_size
    missing = [
        s for s in range(plan.shards) if not shard_is_complete(staging, s, ids[s * size : (s + 1) * size])
    ]
    if missing:
        raise RuntimeError(f"lineart: shards {missing[:5]} of {plan.shards} are not built")
    positions = np.arange(len(ids))
    splits = [split_of(i, params.split.val, params.split.test) for i in ids]
    write_index(staging, ids, (positions // size).tolist(), (positions % size).tolist(), splits)
    meta = {
        "image_size": params.image_size,
        "count": len(ids),
        "splits": {s: splits.count(s) for s in SPLITS},
        "extractor": params.extractor,
        "fingerprint": plan.fingerprint,
    }
    write_meta(staging, meta)
    (staging / "fingerprint").unlink()
    publish_dir(staging, Path(params.out))
    return meta


def build_lineart(params: LineartParams) -> dict:
    """Resize + line art for every manifest row into shards; returns the store's meta."""
    plan = plan_lineart(params)
    jobs = plan.jobs
    for _ in _map(_lineart_shard, jobs, worker_count(params.workers, len(jobs)), "lineart"):
        pass
    return finish_lineart(params, plan)


# ---------------------------------------------------------------- histograms

HISTOGRAM_SHARD = 128  # images per partial


def _partial(staging: str | Path, shard: int) -> Path:
    return Path(staging) / f"part-{shard:05d}.npy"


def _partial_is_complete(staging: Path, shard: int, ids: list[str]) -> bool:
    # The staging folder's fingerprint pins the manifest, so a partial that exists is this shard's.
    return _partial(staging, shard).exists()


def plan_histograms(params: HistogramParams, chunk: int | None = None) -> ShardPlan:
    """Open the staging folder of per-shard `.npy` partials and list those still missing."""
    return _plan(params, chunk or HISTOGRAM_SHARD, _partial_is_complete)


def run_histogram_shard(job: ShardJob) -> int:
    """512-bin colour hints of one shard's images (full resolution), into one atomic partial."""
    cv2.setNumThreads(1)
    hists = np.stack([color_histogram(read_raw(p, job.params)) for p in job.paths])
    atomic_save_npy(_partial(job.staging, job.shard), hists)
    return len(job.ids)


def finish_histograms(params: HistogramParams, plan: ShardPlan) -> int:
    """Join the partials into one Parquet file at `params.out`; drop the staging folder."""
    parts = [_partial(plan.staging, s) for s in range(plan.shards)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise RuntimeError(f"histograms: partials {missing[:5]} of {plan.shards} are not built")
    hists = np.concatenate([np.load(p, allow_pickle=False) for p in parts])
    if len(hists) != len(plan.ids):
        raise RuntimeError(f"histograms: {len(hists)} rows for {len(plan.ids)} images")
    write_histograms(Path(params.out), plan.ids, hists)
    shutil.rmtree(plan.staging)
    return len(plan.ids)


def build_histograms(params: HistogramParams, chunk: int | None = None) -> int:
    """512-bin colour hint of every raw image (full resolution), into one Parquet file."""
    plan = plan_histograms(params, chunk)
    jobs = plan.jobs
    for _ in _map(run_histogram_shard, jobs, worker_count(params.workers, len(jobs)), "histograms"):
        pass
    return finish_histograms(params, plan)
