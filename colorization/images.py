"""Decoding and validating images: one place that turns bytes into RGB uint8.

Every source and stage goes through `decode_rgb`, so a grayscale, RGBA, palette or
16-bit file is converted the same way everywhere, and a corrupt one is rejected with
a reason instead of an exception from deep inside OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# Magic numbers of the formats we accept; anything else is rejected before decoding.
_MAGIC = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "webp": (b"RIFF",),
}


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10


class ImageRejected(ValueError):
    """The bytes are not a usable image; `str(err)` is the one-line reason."""


def sniff_format(data: bytes) -> str | None:
    """Format from the file's magic bytes ('jpeg', 'png', 'webp'), or None."""
    for fmt, magics in _MAGIC.items():
        if any(data.startswith(m) for m in magics):
            if fmt == "webp" and data[8:12] != b"WEBP":
                continue
            return fmt
    return None


def _looks_truncated(data: bytes, fmt: str) -> bool:
    # OpenCV decodes a truncated JPEG/PNG into a partly grey image with only a warning,
    # so check the end-of-image markers ourselves.
    tail = data.rstrip(b"\x00")
    if fmt == "jpeg":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "png":
        return b"IEND" not in data[-16:]
    if fmt == "webp":
        declared = int.from_bytes(data[4:8], "little") + 8
        return len(data) < declared
    return False


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Convert any decoded OpenCV image (gray, BGR, BGRA; 8 or 16 bit) to RGB uint8.

    Alpha is composited over white paper, since line art is drawn on white.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageRejected(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        alpha = image[:, :, 3:4].astype(np.uint16)
        bgr = image[:, :, :3].astype(np.uint16)
        over_white = (bgr * alpha + 255 * (255 - alpha) + 127) // 255
        return cv2.cvtColor(over_white.astype(np.uint8), cv2.COLOR_BGR2RGB)
    raise ImageRejected(f"unsupported channel count {channels}")


def decode_rgb(data: bytes, min_size: int = 1) -> np.ndarray:
    """Decode image bytes to RGB uint8 [H, W, 3], or raise ImageRejected with the reason."""
    if not data:
        raise ImageRejected("empty file")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected("not a JPEG, PNG or WebP image")
    if _looks_truncated(data, fmt):
        raise ImageRejected(f"truncated {fmt}")
    buf = np.frombuffer(data, dtype=np.uint8)
    if fmt == "jpeg" and _IMREAD_RGB is not None:
        # JPEG has no alpha and 8 bits: let libjpeg write RGB directly (saves a colour conversion).
        rgb = cv2.imdecode(buf, _IMREAD_RGB)
        if rgb is None:
            raise ImageRejected(f"corrupt {fmt}: decoder failed")
    else:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ImageRejected(f"corrupt {fmt}: decoder failed")
        rgb = to_rgb8(image)
    height, width = rgb.shape[:2]
    if min(height, width) < min_size:
        raise ImageRejected(f"too small: {width}x{height} < min_size {min_size}")
    return rgb


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def read_rgb(path, min_size: int = 1) -> np.ndarray:
    with open(path, "rb") as fh:
        return decode_rgb(fh.read(), min_size=min_size)
