"""The processed store that training reads at memory speed (layout: docs/pipeline.md): per shard
`.color.npy`, `.lineart.npy` and `.ids.json` (written last: a complete shard), `index.parquet`,
`meta.json`; beside it one histograms Parquet file: id, histogram (fixed_size_list<float32, 512>)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorization.atomic import OutputKind, atomic_path, atomic_write_parquet
from colorization.histogram import HIST_BINS

INDEX_FILE = "index.parquet"
META_FILE = "meta.json"
# A folder the project may replace; one written before the marker is known by its index + meta.
STORE_OUTPUT = OutputKind("line-art store", (INDEX_FILE, META_FILE))
SPLITS = ("train", "val", "test")
HISTOGRAM_SCHEMA = pa.schema([("id", pa.string()), ("histogram", pa.list_(pa.float32(), HIST_BINS))])


def split_of(image_id: str, val: float, test: float) -> str:
    """Deterministic split from a hash of the id: adding images never moves old ones."""
    u = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big") / 2.0**64
    return "test" if u < test else "val" if u < test + val else "train"


def shard_stem(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_is_complete(folder: Path, shard: int, ids: list[str]) -> bool:
    marker = folder / f"{shard_stem(shard)}.ids.json"
    return marker.exists() and json.loads(marker.read_text()) == ids


@contextmanager
def npy_rows(path: str | Path, shape: tuple[int, ...]) -> Iterator[Callable[[np.ndarray], None]]:
    """Yield `add(row)` to write the uint8 `.npy` file `path` of `shape` a row at a time, published atomically
    once complete: stacking a shard, then serialising it, copied ~1 GB, more than the decoding cost."""
    dtype, shape = np.dtype(np.uint8), tuple(shape)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    added = 0

    def add(row: np.ndarray) -> None:
        nonlocal added
        if row.shape != shape[1:] or row.dtype != dtype:
            raise ValueError(f"{Path(path).name}: row {row.dtype} {row.shape}, expected {dtype} {shape[1:]}")
        if added == shape[0]:
            raise ValueError(f"{Path(path).name}: more than {shape[0]} rows")
        fh.write(np.ascontiguousarray(row).data)
        added += 1

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        yield add
        if added != shape[0]:
            raise ValueError(f"{Path(path).name}: {added} rows written of {shape[0]}")


def write_histograms(path: Path, ids: list[str], histograms: np.ndarray) -> None:
    flat = pa.array(np.ascontiguousarray(histograms, dtype=np.float32).ravel(), pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, HIST_BINS)
    table = pa.Table.from_arrays([pa.array(ids, pa.string()), column], schema=HISTOGRAM_SCHEMA)
    atomic_write_parquet(path, table)


def read_histograms(path: Path) -> tuple[list[str], np.ndarray]:
    """(ids, float32 [N, 512]) without a Python loop over rows."""
    table = pq.read_table(path)
    column = table.column("histogram").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.column("id").to_pylist(), values.reshape(-1, HIST_BINS)


@dataclass
class Split:
    """One split in memory: what training, evaluation and tests consume."""

    ids: list[str]
    color: np.ndarray  # uint8 [N, S, S, 3]
    lineart: np.ndarray  # uint8 [N, S, S]
    hint: np.ndarray  # float32 [N, 512]

    def __len__(self) -> int:
        return len(self.ids)


class ProcessedStore:
    """Read access to a `lineart` folder plus its histograms file."""

    def __init__(self, lineart_dir: str | Path, histograms_path: str | Path):
        self.folder = Path(lineart_dir)
        self.histograms_path = Path(histograms_path)
        for required in (self.folder / INDEX_FILE, self.histograms_path):
            if not required.exists():
                raise FileNotFoundError(f"{required} not found: run the preprocess stage first")
        self.index = pq.read_table(self.folder / INDEX_FILE)
        self.meta = json.loads((self.folder / META_FILE).read_text())

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    def _split_rows(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        mask = np.asarray(self.index["split"].to_numpy(zero_copy_only=False) == split)
        ids = np.asarray(self.index["id"].to_pylist(), dtype=object)[mask]
        return ids, self.index["shard"].to_numpy()[mask], self.index["row"].to_numpy()[mask]

    def mean_colour(self, split: str = "train") -> np.ndarray:
        """Average RGB of every pixel of `split`, float [3] on 0..255; one shard in memory at a time."""
        _, shards, rows = self._split_rows(split)
        total, count = np.zeros(3, np.float64), 0
        for shard in np.unique(shards):
            color = np.load(f"{self.folder / shard_stem(int(shard))}.color.npy", mmap_mode="r")
            take = np.sort(rows[shards == shard])
            total += color[take].reshape(-1, 3).sum(axis=0, dtype=np.float64)
            count += len(take) * color.shape[1] * color.shape[2]
        if count == 0:
            raise ValueError(f"the {split} split of {self.folder} is empty")
        return total / count

    def mean_hint(self, split: str = "train") -> np.ndarray:
        """Average 512-bin hint of `split`, float32 [512] (sums to 1)."""
        wanted = set(self._split_rows(split)[0])
        hist_ids, hists = read_histograms(self.histograms_path)
        rows = [k for k, image_id in enumerate(hist_ids) if image_id in wanted]
        if not rows:
            raise ValueError(f"the {split} split of {self.folder} has no histograms")
        return hists[rows].mean(axis=0, dtype=np.float64).astype(np.float32)

    def load(self, split: str, limit: int | None = None) -> Split:
        """All rows of `split` (sorted by id), or the first `limit` of them."""
        ids, shards, rows = (column[:limit] for column in self._split_rows(split))  # [:None]: all
        size = self.image_size
        color = np.empty((len(ids), size, size, 3), np.uint8)
        line = np.empty((len(ids), size, size), np.uint8)
        for shard in np.unique(shards):  # each shard's rows straight into their places
            mask = shards == shard
            stem = self.folder / shard_stem(int(shard))
            color[mask] = np.load(f"{stem}.color.npy", mmap_mode="r")[rows[mask]]
            line[mask] = np.load(f"{stem}.lineart.npy", mmap_mode="r")[rows[mask]]
        hist_ids, hists = read_histograms(self.histograms_path)
        position = {image_id: k for k, image_id in enumerate(hist_ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise ValueError(
                f"{len(missing)} ids have no histogram (e.g. {missing[0]}): re-run the preprocess stage"
            )
        return Split(ids=list(ids), color=color, lineart=line, hint=hists[[position[i] for i in ids]])
