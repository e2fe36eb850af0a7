"""The one place that turns image bytes into RGB uint8: every format converts the same way, a corrupt
file is rejected with a reason, and memory is bounded before decoding (`max_file_bytes` by the file's
size, `max_pixels` by the header's: a 1 MB PNG can declare 5 GB)."""

from __future__ import annotations

import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# Image files we recognise but do not read: listed as rejected, never skipped silently.
UNSUPPORTED_EXTENSIONS = (".gif", ".bmp", ".tif", ".tiff")

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: 150 MB as RGB; 8K UHD is 33 MP
DEFAULT_MAX_FILE_BYTES = 256 * 2**20

# Magic numbers of the formats we accept (and WebP's RIFF...WEBP), and of others named when rejected.
_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}
_OTHER_MAGIC = {b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10


class ImageRejected(ValueError):
    """The bytes are not a usable image; `str(err)` is the one-line reason."""


def sniff_format(data: bytes) -> str | None:
    """Format from the file's magic bytes ('jpeg', 'png', 'webp'), or None."""
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def _int(data: bytes, start: int, size: int, order: str = "little") -> int:
    return int.from_bytes(data[start : start + size], order)


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT, JPG, DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) as the file's header declares them, without decoding; None if unreadable."""
    if fmt == "png":
        return (_int(data, 16, 4, "big"), _int(data, 20, 4, "big")) if data[12:16] == b"IHDR" else None
    if fmt == "webp":
        chunk = data[12:16]
        if chunk == b"VP8X" and len(data) >= 30:
            return _int(data, 24, 3) + 1, _int(data, 27, 3) + 1
        if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
            bits = _int(data, 21, 4)
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
            return _int(data, 26, 2) & 0x3FFF, _int(data, 28, 2) & 0x3FFF
        return None
    if fmt != "jpeg":
        return None
    i, n = 2, len(data)  # JPEG: the markers, walked to the frame header
    while i < n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            continue
        if marker in (0xD9, 0xDA) or i + 2 > n:  # end of image or scan before any frame header
            return None
        if marker in _SOF:
            return (_int(data, i + 5, 2, "big"), _int(data, i + 3, 2, "big")) if i + 7 <= n else None
        i += _int(data, i, 2, "big")
    return None


def check_file_size(size: int, max_file_bytes: int) -> None:
    if size > max_file_bytes:
        raise ImageRejected(f"file too large: {size} bytes > max_file_bytes {max_file_bytes}")


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV image (gray, BGR, BGRA; 8 or 16 bit) as RGB uint8, alpha over white paper."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageRejected(f"unsupported pixel type {image.dtype}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        alpha = image[:, :, 3:4].astype(np.uint16)
        bgr = image[:, :, :3].astype(np.uint16)
        over_white = (bgr * alpha + 255 * (255 - alpha) + 127) // 255
        return cv2.cvtColor(over_white.astype(np.uint8), cv2.COLOR_BGR2RGB)
    raise ImageRejected(f"unsupported channel count {channels}")


def decode_rgba(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a PNG or WebP with transparency to straight-alpha RGBA uint8 [H, W, 4] (a hint
    layer), or raise ImageRejected: also when the image has no alpha channel."""
    image = _decode(data, max_pixels, cv2.IMREAD_UNCHANGED)
    if image.ndim != 3 or image.shape[2] != 4:
        raise ImageRejected(
            "no transparency (alpha channel): a hint layer is RGBA, transparent where no hint is"
        )
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)


def _decode(data: bytes, max_pixels: int, flag: int, convert=None) -> np.ndarray:
    """`convert` of the decoded image once the header passes (empty, unknown, too large and truncated
    data refused); a decoder fault gives a reason."""
    if not data:
        raise ImageRejected("empty file")
    fmt = sniff_format(data)
    if fmt is None:
        if other := next((name for magic, name in _OTHER_MAGIC.items() if data.startswith(magic)), None):
            raise ImageRejected(f"{other} image: not supported (JPEG, PNG or WebP only)")
        raise ImageRejected("not a JPEG, PNG or WebP image")
    declared = header_size(data, fmt)
    if declared is None or 0 in declared:
        raise ImageRejected(f"corrupt {fmt}: no readable image size in its header")
    if (pixels := declared[0] * declared[1]) > max_pixels:
        width, height = declared
        raise ImageRejected(
            f"too large: {width}x{height} = {pixels / 1e6:.3g} MP > max_pixels {max_pixels / 1e6:.3g} MP"
        )
    # OpenCV decodes a truncated JPEG/PNG into a partly grey image with only a warning: check the ends.
    if (
        (fmt == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"))
        or (fmt == "png" and b"IEND" not in data[-16:])
        or (fmt == "webp" and len(data) < _int(data, 4, 4) + 8)  # the RIFF header's size
    ):
        raise ImageRejected(f"truncated {fmt}")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
        if image is None:
            raise ImageRejected(f"corrupt {fmt}: decoder failed")
        return image if convert is None else convert(image)
    except cv2.error as err:  # OpenCV's own limits or a decoder fault
        reason = " ".join(str(getattr(err, "err", None) or str(err).strip().splitlines()[-1]).split())
        raise ImageRejected(f"corrupt {fmt}: {reason[:200]}") from None
    except MemoryError:
        raise ImageRejected(f"{fmt} too large to decode in memory") from None


def decode_rgb(data: bytes, min_size: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to RGB uint8 [H, W, 3], or raise ImageRejected with the reason."""
    if _IMREAD_RGB is not None and sniff_format(data) == "jpeg":
        rgb = _decode(data, max_pixels, _IMREAD_RGB)  # 8 bits, no alpha: libjpeg writes RGB directly
    else:
        rgb = _decode(data, max_pixels, cv2.IMREAD_UNCHANGED, to_rgb8)
    height, width = rgb.shape[:2]
    if min(height, width) < min_size:
        raise ImageRejected(f"too small: {width}x{height} < min_size {min_size}")
    return rgb


def _encode(name: str, bgr: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(f".{name.lower()}", bgr, params)
    if not ok:
        raise RuntimeError(f"{name} encoding failed")
    return buf.tobytes()


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG of an RGB or RGBA (straight alpha) uint8 image."""
    code = cv2.COLOR_RGBA2BGRA if rgb.ndim == 3 and rgb.shape[2] == 4 else cv2.COLOR_RGB2BGR
    return _encode("PNG", cv2.cvtColor(rgb, code))


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    return _encode("JPEG", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (cv2.IMWRITE_JPEG_QUALITY, quality))


def read_image_bytes(path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The file's bytes, refusing from its size alone (before reading) a file over the limit."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        check_file_size(size, max_file_bytes)
        # Ask for fstat's size plus one byte: read(n) allocates n bytes first, and n = the limit cost
        # 4 times a 100 kB file's read. A file that grows meanwhile is read on, within the limit.
        data = fh.read(size + 1)
        if len(data) > size:
            data += fh.read(max_file_bytes + 1 - len(data))
    check_file_size(len(data), max_file_bytes)
    return data


def read_rgb(
    path, max_pixels: int = DEFAULT_MAX_PIXELS, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> np.ndarray:
    return decode_rgb(read_image_bytes(path, max_file_bytes), max_pixels=max_pixels)
