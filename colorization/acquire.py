"""Stage `acquire`: fill the raw folder from the configured source and write its manifest."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from colorization.atomic import atomic_write_bytes, remove_stale_temporaries
from colorization.config import AcquireParams
from colorization.images import encode_png
from colorization.manifest import IMAGES_DIR, MANIFEST_FILE, read_manifest, write_manifest, write_rejected
from colorization.progress import progress
from colorization.sources.folder import acquire_folder
from colorization.sources.synthetic import render
from colorization.textsafe import escaped

log = logging.getLogger(__name__)


class NothingAcquired(RuntimeError):
    """No valid image remains: the stage fails rather than feed an empty dataset onward."""


# The exit status of `colorization acquire` when the failure is worth another try later
# (BSD's EX_TEMPFAIL): the Prefect flow, which runs the stage through DVC, retries on it.
TEMPORARY_FAILURE = 75


def is_transient(exc: BaseException, source: str) -> bool:
    """Failures of the network path, worth a retry (an empty crawl of a live site: it was down)."""
    import requests

    from colorization.sources.polite_http import FetchError
    from colorization.sources.safebooru_api import PageFailed

    if isinstance(exc, NothingAcquired):
        return source == "safebooru"
    if isinstance(exc, FetchError):
        return not exc.permanent
    return isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError, PageFailed))


class FoldersOverlap(ValueError):
    """The output folder is, holds or lies inside the input folder; the message is one line."""


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


def run_acquire(params: AcquireParams) -> AcquireSummary:
    out = Path(params.out)
    # Overlapping folders are refused: a run would read its own output, or clean the user's pictures.
    if params.source == "folder":
        given = Path(params.folder.input)
        src, dst, shown, where = given.resolve(), out.resolve(), escaped(out), escaped(given)
        if src == dst:
            raise FoldersOverlap(
                f"--out {shown} is the input folder; give acquire an output folder of its own"
            )
        if dst.is_relative_to(src):
            raise FoldersOverlap(f"--out {shown} lies inside the input folder {where}; choose another")
        if src.is_relative_to(dst):
            raise FoldersOverlap(f"the input folder {where} lies inside --out {shown}; choose another")
    try:  # the image paths the manifest already there records: the files this project wrote
        previous = set(read_manifest(out)["path"].to_pylist())
    except FileNotFoundError:
        previous = set()
    except Exception as err:  # unreadable: then nothing is known to be ours, so nothing is removed
        log.warning("acquire: %s unreadable (%s); removing no old files", out / MANIFEST_FILE, err)
        previous = set()
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    rejected: list[dict] = []
    if params.source == "synthetic":
        accepted = acquire_synthetic(params.synthetic.count, params.synthetic.size, params.seed, out)
    elif params.source == "folder":
        accepted, rejected = acquire_folder(
            Path(params.folder.input), out, params.min_size, params.max_pixels, params.max_file_bytes
        )
    else:
        from colorization.sources.safebooru import acquire_safebooru

        accepted, rejected = acquire_safebooru(
            params.safebooru, out, seed=params.seed, max_pixels=params.max_pixels
        )
    if not accepted:
        raise NothingAcquired(f"no valid image acquired from source {params.source!r}")
    # Disk follows the manifest: drop what a previous one listed in its images folder and this one does
    # not (only those: a user's files are not ours).
    images = (out / IMAGES_DIR).resolve()
    for rel in sorted(previous - {r["path"] for r in accepted}):
        file = out / rel
        if file.resolve().parent == images and not file.is_symlink() and file.is_file():
            file.unlink()
    manifest = write_manifest(out, accepted)
    write_rejected(out, rejected)
    log.info("acquire: %d accepted, %d rejected -> %s", len(accepted), len(rejected), manifest)
    return AcquireSummary(len(accepted), len(rejected), manifest)
