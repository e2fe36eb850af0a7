"""The raw-data contract: `manifest.parquet`, a row per accepted image (path relative to the raw
folder; source metadata null where a source has none), and `rejected.parquet`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from colorization.atomic import atomic_write_parquet

MANIFEST_FILE = "manifest.parquet"
REJECTED_FILE = "rejected.parquet"
IMAGES_DIR = "images"

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
        # source metadata: safebooru fills these; synthetic fills `tags` with its shape family
        ("post_id", pa.int64()),
        ("tags", pa.string()),
        ("rating", pa.string()),
        ("md5", pa.string()),
        ("file_url", pa.string()),
        ("source_url", pa.string()),
        ("score", pa.int64()),
    ]
)

REJECTED_SCHEMA = pa.schema([("source", pa.string()), ("item", pa.string()), ("reason", pa.string())])


def write_manifest(raw_dir: Path, rows: list[dict]) -> Path:
    rows = sorted(rows, key=lambda r: r["id"])
    if len({r["id"] for r in rows}) != len(rows):
        raise ValueError("manifest would hold duplicate ids")
    path = Path(raw_dir) / MANIFEST_FILE
    atomic_write_parquet(path, pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA))
    return path


def write_rejected(raw_dir: Path, rows: list[dict]) -> None:
    atomic_write_parquet(Path(raw_dir) / REJECTED_FILE, pa.Table.from_pylist(rows, schema=REJECTED_SCHEMA))


def read_manifest(raw_dir: Path) -> pa.Table:
    path = Path(raw_dir) / MANIFEST_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the acquire stage first")
    return pq.read_table(path)
