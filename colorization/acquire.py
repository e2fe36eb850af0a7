"""Stage `acquire`: fill the raw folder from the configured source and write its manifest."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from colorization.atomic import atomic_write_bytes, remove_stale_temporaries
from colorization.config import AcquireParams
from colorization.images import encode_png
from colorization.manifest import IMAGES_DIR, write_manifest, write_rejected
from colorization.progress import progress
from colorization.sources.folder import acquire_folder
from colorization.sources.synthetic import render

log = logging.getLogger(__name__)


class NothingAcquired(RuntimeError):
    """No valid image remains: the stage fails rather than feed an empty dataset onward."""


@dataclass(frozen=True)
class AcquireSummary:
    accepted: int
    rejected: int
    manifest: Path


def acquire_synthetic(count: int, size: int, seed: int, out_dir: Path) -> list[dict]:
    rows = []
    for index in progress(range(count), "acquire synthetic"):
        image_id = f"synthetic-{index:06d}"
        rel = f"{IMAGES_DIR}/{image_id}.png"
        path = out_dir / rel
        picture = render(index, seed, size)
        # Rendering is cheap and deterministic; re-encode to compare instead of trusting disk.
        data = encode_png(picture.rgb)
        if not path.exists() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
        rows.append(
            {
                "id": image_id,
                "source": "synthetic",
                "path": rel,
                "width": size,
                "height": size,
                "sha256": hashlib.sha256(data).hexdigest(),
                "tags": " ".join(sorted(set(picture.families))),
            }
        )
    return rows


def _remove_unlisted(out_dir: Path, rows: list[dict]) -> None:
    """Drop image files a previous run with other settings left: disk must match the manifest."""
    keep = {out_dir / r["path"] for r in rows}
    folder = out_dir / IMAGES_DIR
    if folder.is_dir():
        for file in folder.iterdir():
            if file.is_file() and file not in keep:
                file.unlink()


def run_acquire(params: AcquireParams) -> AcquireSummary:
    out = Path(params.out)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    rejected: list[dict] = []
    if params.source == "synthetic":
        accepted = acquire_synthetic(params.synthetic.count, params.synthetic.size, params.seed, out)
    elif params.source == "folder":
        accepted, rejected = acquire_folder(Path(params.folder.input), out, params.min_size)
    else:
        from colorization.sources.safebooru import acquire_safebooru

        accepted, rejected = acquire_safebooru(params.safebooru, out, seed=params.seed)
    if not accepted:
        raise NothingAcquired(f"no valid image acquired from source {params.source!r}")
    _remove_unlisted(out, accepted)
    manifest = write_manifest(out, accepted)
    write_rejected(out, rejected)
    log.info("acquire: %d accepted, %d rejected -> %s", len(accepted), len(rejected), manifest)
    return AcquireSummary(len(accepted), len(rejected), manifest)
