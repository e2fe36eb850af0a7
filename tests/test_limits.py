"""Bounded memory on every decode path: huge declared sizes and huge files are refused unread.

The inputs are what a careless or hostile folder holds: a 4 MB PNG declaring 30000 x 30000
pixels (5 GB decoded), one declaring 60000 x 60000 (beyond OpenCV's own limit, which used
to end the stage with a cv2.error traceback), and a sparse 3 GB ".jpg". Each command runs
in a child of a small wrapper process, whose RUSAGE_CHILDREN peak is the command's alone
(this test process's own children from other tests do not count).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from colorization.images import (
    ImageRejected,
    decode_rgb,
    header_size,
    read_image_bytes,
    read_rgb,
    sniff_format,
)
from colorization.manifest import write_manifest
from tests.conftest import random_bgr, write_image

GIB = 2**30
PEAK_LIMIT = GIB
WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


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


def measured(cmd: list[str], cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """Run `cmd` under the wrapper; returns its result and its peak resident memory in bytes."""
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *cmd], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    peak = [line for line in result.stderr.splitlines() if line.startswith("PEAK_KIB ")]
    assert peak, result.stderr
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("PEAK_KIB "))
    return result, int(peak[-1].split()[1]) * 1024


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "colorization", *args]


def report(name: str, peak: int) -> None:
    print(f"{name}: peak RSS {peak / 2**20:.0f} MiB")


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


# ---------------------------------------------------------------- every stage, as a process


def test_acquire_folder_rejects_huge_images_in_bounded_memory(huge, tmp_path, small_params):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for path in huge.values():
        os.link(path, inbox / path.name)  # a hard link: a file of the input folder itself
    write_image(inbox / "fine.png", random_bgr(80, 80))
    result, peak = measured(cli("acquire", "--params", str(small_params), "--source", "folder"))
    report("acquire", peak)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rejected = {
        Path(r["item"]).name: r["reason"]
        for r in pq.read_table(tmp_path / "raw/rejected.parquet").to_pylist()
    }
    assert rejected["wide.png"].startswith("too large: 30000x30000")
    assert rejected["vast.png"].startswith("too large: 60000x60000")
    assert rejected["sparse.jpg"].startswith("file too large: 3221225472 bytes")
    assert pq.read_table(tmp_path / "raw/manifest.parquet").num_rows == 1
    assert peak < PEAK_LIMIT


@pytest.mark.parametrize("name", ["vast", "sparse"])
def test_preprocess_refuses_a_huge_raw_image_in_one_line(huge, tmp_path, small_params, name):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    write_image(raw / "images/fine.png", random_bgr(80, 80))
    target = raw / "images" / huge[name].name
    os.link(huge[name], target)
    row = {"source": "folder", "width": 80, "height": 80, "sha256": "0"}
    rows = [
        {**row, "id": "a-fine", "path": "images/fine.png"},
        {**row, "id": "b-huge", "path": f"images/{target.name}"},  # the manifest need not say so
    ]
    write_manifest(raw, rows)
    result, peak = measured(cli("preprocess", "--params", str(small_params)))
    report(f"preprocess {name}", peak)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and target.name in lines[0], result.stderr
    assert "too large" in lines[0]
    assert peak < PEAK_LIMIT


def test_colorize_refuses_huge_inputs_and_colours_the_rest(huge, tmp_path, monkeypatch):
    from tests.test_evaluate import save_model_dir

    save_model_dir(tmp_path / "cgan", "cgan")
    fine = write_image(tmp_path / "in/fine.png", random_bgr(50, 70))
    inputs = [str(huge["wide"]), str(huge["vast"]), str(huge["sparse"]), str(fine)]
    out = tmp_path / "out"
    cmd = cli("colorize", *inputs, "-o", str(out), "--model", str(tmp_path / "cgan"), "--palette", "#ff0000")
    result, peak = measured([*cmd, "--device", "cpu"], cwd=tmp_path)
    report("colorize", peak)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # some inputs failed
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, result.stderr
    assert (out / "fine.png").exists()
    assert peak < PEAK_LIMIT


def test_a_file_that_grows_while_read_is_read_whole_within_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "growing.bin"
    path.write_bytes(b"x" * 10)
    real_fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((*real_fstat(fd)[:6], 4, *real_fstat(fd)[7:])))
    assert read_image_bytes(path, max_file_bytes=10) == b"x" * 10  # fstat said 4: read on
    path.write_bytes(b"x" * 20)
    with pytest.raises(ImageRejected, match="file too large: 11 bytes > max_file_bytes 10"):
        read_image_bytes(path, max_file_bytes=10)  # but no further than one byte past the limit
