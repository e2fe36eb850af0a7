"""Stage `acquire` in-process: the synthetic and folder sources, manifests and resumes."""

from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from colorization.acquire import NothingAcquired, run_acquire
from colorization.config import load_params
from colorization.images import read_rgb
from colorization.manifest import MANIFEST_SCHEMA
from tests.conftest import random_bgr, write_image


def test_synthetic_acquire_writes_manifest_and_resumes(tmp_path, small_params):
    params = load_params(small_params)
    summary = run_acquire(params.acquire)
    manifest = pq.read_table(summary.manifest)
    assert manifest.schema.names == MANIFEST_SCHEMA.names
    assert manifest.num_rows == 24 and len(set(manifest["id"].to_pylist())) == 24
    files = sorted((tmp_path / "raw/images").iterdir())
    assert len(files) == 24
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    run_acquire(params.acquire)  # a second run rewrites nothing
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert pq.read_table(summary.manifest).equals(manifest)


def test_synthetic_fewer_images_removes_the_extra_files(tmp_path, small_params):
    run_acquire(load_params(small_params, {"acquire.synthetic.count": 5}).acquire)
    run_acquire(load_params(small_params, {"acquire.synthetic.count": 3}).acquire)
    assert len(list((tmp_path / "raw/images").iterdir())) == 3


@pytest.fixture
def messy_inbox(tmp_path):
    inbox = tmp_path / "inbox"
    good = write_image(inbox / "good.jpg", random_bgr(80, 120, 1))
    full = good.read_bytes()
    (inbox / "sub").mkdir()
    (inbox / "sub/truncated.jpg").write_bytes(full[: len(full) // 2])
    (inbox / "notes.png").write_text("this is not an image\n")
    write_image(inbox / "gray.png", random_bgr(70, 70, 2)[:, :, 0])
    rgba = np.dstack([random_bgr(70, 70, 3), np.full((70, 70), 128, np.uint8)])
    write_image(inbox / "sub/rgba.png", rgba)
    write_image(inbox / "deep16.png", (random_bgr(70, 70, 4).astype(np.uint16) * 257))
    write_image(inbox / "tiny.webp", random_bgr(20, 20, 5))
    write_image(inbox / "copy.jpg", random_bgr(80, 120, 1))  # same bytes as good.jpg
    (inbox / "readme.txt").write_text("ignored: not an image extension")
    return inbox


def test_folder_source_converts_or_rejects_bad_input(tmp_path, small_params, messy_inbox, caplog):
    params = load_params(small_params, {"acquire.source": "folder"})
    summary = run_acquire(params.acquire)
    manifest = pq.read_table(tmp_path / "raw/manifest.parquet").to_pylist()
    rejected = {
        r["item"].rsplit("/", 1)[-1]: r["reason"]
        for r in pq.read_table(tmp_path / "raw/rejected.parquet").to_pylist()
    }
    assert summary.accepted == 4  # good, gray, rgba, deep16
    assert set(rejected) == {"truncated.jpg", "notes.png", "tiny.webp", "copy.jpg"} or set(rejected) == {
        "truncated.jpg",
        "notes.png",
        "tiny.webp",
        "good.jpg",
    }
    assert rejected["truncated.jpg"] == "truncated jpeg"
    assert rejected["notes.png"] == "not a JPEG, PNG or WebP image"
    assert rejected["tiny.webp"].startswith("too small: 20x20")
    assert sum("skipped" in r.message for r in caplog.records) == 4  # one warning line each
    for row in manifest:  # everything stored is plain 8-bit RGB that decodes
        stored = cv2.imread(str(tmp_path / "raw" / row["path"]), cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and stored.ndim == 3 and stored.shape[2] == 3
        assert (row["width"], row["height"]) == (stored.shape[1], stored.shape[0])
    rgba_row = next(r for r in manifest if r["tags"] == "sub/rgba.png")
    rgb = read_rgb(tmp_path / "raw" / rgba_row["path"])
    expected = (random_bgr(70, 70, 3)[:, :, ::-1].astype(int) * 128 + 255 * 127 + 127) // 255
    assert np.abs(rgb.astype(int) - expected).max() <= 1  # composited over white


def test_folder_source_errors(tmp_path, small_params):
    params = load_params(small_params, {"acquire.source": "folder"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_acquire(params.acquire)
    (tmp_path / "inbox").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .jpg"):
        run_acquire(params.acquire)
    (tmp_path / "inbox/bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(NothingAcquired):
        run_acquire(params.acquire)


def test_folder_source_does_not_follow_symlinks_out_of_the_input(tmp_path, small_params):
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    write_image(inbox / "own.png", random_bgr(80, 80, 1))
    write_image(elsewhere / "private.png", random_bgr(80, 80, 2))
    write_image(elsewhere / "dir/more.png", random_bgr(80, 80, 3))
    (inbox / "link.png").symlink_to(elsewhere / "private.png")
    (inbox / "inner.png").symlink_to(inbox / "own.png")  # inside the input: read (a duplicate)
    (inbox / "dir").symlink_to(elsewhere / "dir")
    params = load_params(small_params, {"acquire.source": "folder"})
    summary = run_acquire(params.acquire)
    assert summary.accepted == 1
    rows = pq.read_table(tmp_path / "raw/rejected.parquet").to_pylist()
    rejected = {Path(r["item"]).name: r["reason"] for r in rows}
    assert "outside the input folder: not followed" in rejected["link.png"]
    assert str(elsewhere / "private.png") in rejected["link.png"]
    assert rejected["dir"].endswith("not followed")
    assert (rejected.get("inner.png") or rejected["own.png"]).startswith("duplicate")


GIF_1X1 = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def test_unsupported_formats_are_rejected_with_a_reason(tmp_path, small_params):
    inbox = tmp_path / "inbox"
    write_image(inbox / "ok.png", random_bgr(80, 80, 1))
    write_image(inbox / "pic.bmp", random_bgr(80, 80, 2))
    write_image(inbox / "sub/scan.tiff", random_bgr(80, 80, 3))
    write_image(inbox / "scan2.TIF", random_bgr(80, 80, 4))
    (inbox / "anim.gif").write_bytes(GIF_1X1)
    summary = run_acquire(load_params(small_params, {"acquire.source": "folder"}).acquire)
    assert summary.accepted == 1
    rows = pq.read_table(tmp_path / "raw/rejected.parquet").to_pylist()
    rejected = {Path(r["item"]).name: r["reason"] for r in rows}
    assert rejected == {
        "pic.bmp": "BMP image: not supported (JPEG, PNG or WebP only)",
        "scan.tiff": "TIFF image: not supported (JPEG, PNG or WebP only)",
        "scan2.TIF": "TIFF image: not supported (JPEG, PNG or WebP only)",
        "anim.gif": "GIF image: not supported (JPEG, PNG or WebP only)",
    }
