"""colorization.images: decoding, header sizes and refusals without decoding."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from colorization.images import (
    ImageRejected,
    decode_rgb,
    header_size,
    read_image_bytes,
    read_rgb,
    sniff_format,
)
from tests.conftest import random_bgr, write_image


def test_decode_rejects_html_and_empty():
    with pytest.raises(ImageRejected, match="empty"):
        decode_rgb(b"")
    with pytest.raises(ImageRejected, match="not a JPEG"):
        decode_rgb(b"<!doctype html><html></html>")


GIB = 2**30


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(path: Path, width: int, height: int) -> Path:
    """A valid grey PNG of width x height black pixels, compressed row block by row block:
    a few MB on disk, never the whole image in memory."""
    row = b"\x00" * (1 + width)  # filter byte + pixels
    per_block = max(1, (8 << 20) // len(row))
    compressor = zlib.compressobj(1)
    with open(path, "wb") as fh:
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
        fh.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        left = height
        while left:
            n = min(per_block, left)
            left -= n
            out = compressor.compress(row * n)
            if out:
                fh.write(_chunk(b"IDAT", out))
        fh.write(_chunk(b"IDAT", compressor.flush()) + _chunk(b"IEND", b""))
    return path


def sparse_jpeg(path: Path, size: int) -> Path:
    """A file of `size` bytes that starts like a JPEG; sparse, so it costs no disk."""
    with open(path, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0")
        fh.truncate(size)
    return path


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("huge")
    files = {
        "wide": huge_png(root / "wide.png", 30000, 30000),
        "vast": huge_png(root / "vast.png", 60000, 60000),
        "sparse": sparse_jpeg(root / "sparse.jpg", 3 * GIB),
    }
    assert files["wide"].stat().st_size < 16 << 20 and files["vast"].stat().st_size < 64 << 20
    assert files["sparse"].stat().st_blocks * 512 < 1 << 20
    return files


# ---------------------------------------------------------------- the header is read first


def test_header_sizes_and_refusals_without_decoding(huge):
    data = huge["vast"].read_bytes()
    assert header_size(data, sniff_format(data)) == (60000, 60000)
    with pytest.raises(ImageRejected, match=r"too large: 60000x60000 = 3.6e\+03 MP > max_pixels 50 MP"):
        decode_rgb(data)
    with pytest.raises(ImageRejected, match="file too large: 3221225472 bytes > max_file_bytes"):
        read_rgb(huge["sparse"])
    # The same refusals for a JPEG's and a WebP's declared size.
    jpeg = (
        b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x11\x08" + struct.pack(">HH", 40000, 30000) + b"\x03"
    )
    with pytest.raises(ImageRejected, match="too large: 30000x40000"):
        decode_rgb(jpeg + b"\x00" * 64 + b"\xff\xd9")
    vp8x = b"RIFF\x00\x01\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00"
    webp = vp8x + (16000 - 1).to_bytes(3, "little") + (16000 - 1).to_bytes(3, "little")
    with pytest.raises(ImageRejected, match="too large: 16000x16000"):
        decode_rgb(webp + b"\x00" * 65536)
    with pytest.raises(ImageRejected, match="no readable image size"):
        decode_rgb(b"\xff\xd8\xff\xda\x00\x02\xff\xd9")
    small = write_image(huge["wide"].parent / "small.png", random_bgr(40, 60))
    assert read_rgb(small, max_pixels=2400).shape == (40, 60, 3)
    with pytest.raises(ImageRejected, match="max_pixels"):
        read_rgb(small, max_pixels=2399)


def test_a_file_that_grows_while_read_is_read_whole_within_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "growing.bin"
    path.write_bytes(b"x" * 10)
    real_fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((*real_fstat(fd)[:6], 4, *real_fstat(fd)[7:])))
    assert read_image_bytes(path, max_file_bytes=10) == b"x" * 10  # fstat said 4: read on
    path.write_bytes(b"x" * 20)
    with pytest.raises(ImageRejected, match="file too large: 11 bytes > max_file_bytes 10"):
        read_image_bytes(path, max_file_bytes=10)  # but no further than one byte past the limit
