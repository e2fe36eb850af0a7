"""Any folder of jpg / png / webp images, searched recursively: 8-bit RGB files kept byte for byte,
others converted to RGB PNG; unusable and duplicate files rejected with one warning line each."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np

from colorization import images
from colorization.atomic import atomic_write_bytes
from colorization.manifest import IMAGES_DIR
from colorization.progress import progress
from colorization.textsafe import escaped

log = logging.getLogger(__name__)
EXTENSION_OF = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def acquire_folder(
    input_dir: Path,
    out_dir: Path,
    min_size: int,
    max_pixels: int = images.DEFAULT_MAX_PIXELS,
    max_file_bytes: int = images.DEFAULT_MAX_FILE_BYTES,
) -> tuple[list[dict], list[dict]]:
    accepted: dict[str, dict] = {}
    rejected: list[dict] = []

    def reject(item: object, reason: str) -> None:
        log.warning("skipped %s: %s", escaped(item), escaped(reason))
        rejected.append({"source": "folder", "item": str(item), "reason": reason})

    root, folder = Path(input_dir).resolve(), Path(input_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    # .gif, .bmp and .tiff are listed too: rejected with a reason, not silently left out.
    wanted = images.IMAGE_EXTENSIONS + images.UNSUPPORTED_EXTENSIONS
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    if not files:
        raise FileNotFoundError(f"input folder {folder} holds no .jpg, .png or .webp files")
    # The recursive search does not enter symlinked folders: say so.
    for link in sorted(p for p in folder.rglob("*") if p.is_symlink() and p.is_dir()):
        reject(link, f"symlink to the folder {link.resolve()}: not followed")
    for file in progress(files, "acquire folder", unit="file"):
        if not (target := file.resolve()).is_relative_to(root):
            reject(file, f"symlink to {target}, outside the input folder: not followed")
            continue
        try:
            data = images.read_image_bytes(file, max_file_bytes)  # refused from its size, before reading
            rgb = images.decode_rgb(data, min_size=min_size, max_pixels=max_pixels)
        except images.ImageRejected as err:
            reject(file, str(err))
            continue
        image_id = "folder-" + hashlib.sha256(data).hexdigest()[:16]
        if image_id in accepted:
            reject(file, f"duplicate of {accepted[image_id]['tags']}")
            continue
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is not None and decoded.dtype == np.uint8 and decoded.shape[2:] == (3,):  # plain RGB8
            stored, ext = data, EXTENSION_OF[images.sniff_format(data)]
        else:
            stored, ext = images.encode_png(rgb), ".png"
        rel = f"{IMAGES_DIR}/{image_id}{ext}"
        atomic_write_bytes(out_dir / rel, stored)
        accepted[image_id] = {
            "id": image_id,
            "source": "folder",
            "path": rel,
            "width": rgb.shape[1],
            "height": rgb.shape[0],
            "sha256": hashlib.sha256(stored).hexdigest(),
            "tags": str(file.relative_to(input_dir)),  # where it came from
        }
    return list(accepted.values()), rejected
