"""Stage `preprocess`: raw images -> the processed store (line art + colour hints), one decode each. Shards
run on processes or Dask, resumable from a staging folder; each output is published atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pyarrow as pa

from colorization import atomic, store
from colorization.config import HistogramParams, LineartParams
from colorization.histogram import HIST_BINS, color_histogram
from colorization.images import ImageRejected, read_rgb
from colorization.lineart import prepare_pair
from colorization.manifest import read_manifest
from colorization.processes import die_with_parent, retain_freed_memory
from colorization.progress import progress
from colorization.textsafe import escaped

log = logging.getLogger(__name__)


def _init_worker(parent_pid: int | None = None) -> None:
    """Set up a process that runs shards: a pool worker, or the stage's own process."""
    die_with_parent(parent_pid)  # a killed stage leaves no workers behind
    retain_freed_memory()  # the next image reuses the last one's memory, no fresh pages
    cv2.setNumThreads(1)


# The Dask scheduler to map shards over (unset: local processes), set by the flow: no orchestrator here.
DASK_SCHEDULER_ENV = "COLORIZATION_DASK_SCHEDULER"
SHARD_RETRIES = 2  # on Dask: a lost or failed shard is run again on its own (its writes are atomic)


def _map(fn, jobs: list, workers: int, desc: str):
    """Ordered map: on Dask when the environment names a scheduler, else processes (or in-process)."""
    if address := os.environ.get(DASK_SCHEDULER_ENV):
        from distributed import Client

        with Client(address) as client:
            futures = client.map(fn, jobs, retries=SHARD_RETRIES, pure=False)
            yield from progress((f.result() for f in futures), desc, total=len(jobs), unit="shard")
        return
    if workers <= 1 or len(jobs) <= 1:
        _init_worker()
        yield from progress(map(fn, jobs), desc, total=len(jobs), unit="shard")
        return
    ctx = __import__("multiprocessing").get_context("spawn")  # safe under threaded callers (Prefect)
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        yield from progress(pool.map(fn, jobs), desc, total=len(jobs), unit="shard")


# The stage in three: `plan_preprocess` lists the shards to build, `run_shard` builds one (safe
# to run again), `finish_preprocess` joins them and publishes both outputs.


class ShardJob(NamedTuple):
    """One shard: the manifest rows `ids` (images `paths`), built into `staging`."""

    staging: str
    shard: int
    ids: list[str]
    paths: list[str]
    params: LineartParams


@dataclass(frozen=True)
class ShardPlan:
    """The staging folder, every manifest id in order, and the shards left to build."""

    staging: str
    ids: list[str]
    fingerprint: str
    shards: int
    jobs: list[ShardJob]


def plan_preprocess(raw: str | Path, params: LineartParams) -> ShardPlan:
    """Open the staging folder and list the shards of the raw folder not yet built there."""
    # Absolute paths in the jobs: a Dask worker elsewhere need not share this working directory.
    raw, out = Path(raw).resolve(), Path(params.out).resolve()
    atomic.check_replaceable(out, store.STORE_OUTPUT)  # refused now, not after building every shard
    manifest = read_manifest(raw).sort_by("id")
    ids = manifest["id"].to_pylist()
    if not ids:
        raise ValueError(f"{raw}: the manifest holds no images")
    paths = [str(raw / p) for p in manifest["path"].to_pylist()]
    # Limits only refuse inputs: a store built under other limits holds the same bytes.
    unshaping = {"workers", "out", "max_pixels", "max_file_bytes"}
    shas = "".join(manifest["sha256"].to_pylist())
    fingerprint = hashlib.sha256((params.model_dump_json(exclude=unshaping) + shas).encode()).hexdigest()
    # The staging folder is kept (a resumed run) when it was made for the same inputs, else created.
    staging = out.with_name(f".{out.name}.partial")
    stamp = staging / "fingerprint"
    if staging.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        if not stamp.exists():  # a folder without our stamp is cleared only if it bears our marker
            atomic.check_replaceable(staging, store.STORE_OUTPUT)
        shutil.rmtree(staging)  # leftovers of other inputs or params: not ours to resume
    staging.mkdir(parents=True, exist_ok=True)
    atomic.mark_output(staging, store.STORE_OUTPUT)  # first: a stamped staging bears the marker
    stamp.write_text(fingerprint)
    atomic.remove_stale_temporaries(staging)
    size, jobs = params.shard_size, []
    for shard, start in enumerate(range(0, len(ids), size)):
        shard_ids = ids[start : start + size]
        if not store.shard_is_complete(staging, shard, shard_ids):
            jobs.append(ShardJob(str(staging), shard, shard_ids, paths[start : start + size], params))
    shards = -(-len(ids) // size)
    if shards - len(jobs):
        log.info("%s: resuming, %d finished shards kept", out.name, shards - len(jobs))
    return ShardPlan(str(staging), ids, fingerprint, shards, jobs)


def run_shard(job: ShardJob) -> int:
    """One decode per image: its histogram (full size), then resize + line art, streamed to the
    shard's files so a worker holds one image, not the shard (256 MB at 512 px)."""
    cv2.setNumThreads(1)
    params, count = job.params, len(job.paths)
    side = params.image_size
    stem = Path(job.staging) / store.shard_stem(job.shard)
    hists = np.empty((count, HIST_BINS), np.float32)
    with (
        store.npy_rows(f"{stem}.color.npy", (count, side, side, 3)) as add_colour,
        store.npy_rows(f"{stem}.lineart.npy", (count, side, side)) as add_line,
    ):
        for k, path in enumerate(job.paths):
            try:
                rgb = read_rgb(path, max_pixels=params.max_pixels, max_file_bytes=params.max_file_bytes)
            except ImageRejected as err:  # one line that names the file
                raise ImageRejected(f"{escaped(path)}: {err}") from None
            hists[k] = color_histogram(rgb)  # the contract: the hint of the full-size raw image
            colour, line = prepare_pair(rgb, params)
            add_colour(colour)
            add_line(line)
    atomic.atomic_save_npy(f"{stem}.histograms.npy", hists)
    atomic.atomic_write_text(f"{stem}.ids.json", json.dumps(job.ids))  # completion marker, last
    return len(job.ids)


_run_shard = run_shard  # what build_preprocess maps (a test stands in for it)


def finish_preprocess(params: LineartParams, histograms: HistogramParams, plan: ShardPlan) -> dict:
    """Index + meta of the built shards; publish the histograms file, then the store at `params.out`."""
    staging, ids, size = Path(plan.staging), plan.ids, params.shard_size
    missing = [
        s
        for s in range(plan.shards)
        if not store.shard_is_complete(staging, s, ids[s * size : (s + 1) * size])
    ]
    if missing:
        raise RuntimeError(f"preprocess: shards {missing[:5]} of {plan.shards} are not built")
    parts = [staging / f"{store.shard_stem(s)}.histograms.npy" for s in range(plan.shards)]
    hists = np.concatenate([np.load(p, allow_pickle=False) for p in parts])
    if len(hists) != len(ids):
        raise RuntimeError(f"preprocess: {len(hists)} histograms for {len(ids)} images")
    positions = np.arange(len(ids))
    splits = [store.split_of(i, params.split.val, params.split.test) for i in ids]
    index = {"id": ids, "shard": positions // size, "row": positions % size, "split": splits}
    atomic.atomic_write_parquet(staging / store.INDEX_FILE, pa.table(index))
    meta = {
        "image_size": params.image_size,
        "count": len(ids),
        "splits": {s: splits.count(s) for s in store.SPLITS},
        "extractor": params.extractor,
        "lineart": params.recipe().model_dump(),  # the recipe training copies into each model
        "fingerprint": plan.fingerprint,
    }
    atomic.atomic_write_text(staging / store.META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    Path(histograms.out).parent.mkdir(parents=True, exist_ok=True)
    store.write_histograms(Path(histograms.out), ids, hists)
    for part in parts:
        part.unlink()
    (staging / "fingerprint").unlink()
    atomic.publish_dir(staging, Path(params.out).resolve(), store.STORE_OUTPUT)
    return meta


def build_preprocess(raw: str | Path, params: LineartParams, histograms: HistogramParams) -> dict:
    """Line art + colour hint of every row of raw's manifest, one decode each; returns the store's meta."""
    plan = plan_preprocess(raw, params)
    workers = max(1, min(params.workers or os.cpu_count() or 1, len(plan.jobs)))
    for _ in _map(_run_shard, plan.jobs, workers, "preprocess"):
        pass
    return finish_preprocess(params, histograms, plan)
