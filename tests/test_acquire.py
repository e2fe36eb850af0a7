import subprocess
import sys

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from colorization.acquire import NothingAcquired, acquire_synthetic, run_acquire
from colorization.config import load_params
from colorization.images import ImageRejected, decode_rgb, read_rgb
from colorization.manifest import MANIFEST_SCHEMA
from colorization.sources.synthetic import render
from tests.conftest import random_bgr, write_image


def test_synthetic_is_deterministic_for_a_seed():
    a, b, c = render(3, 0, 64), render(3, 0, 64), render(3, 1, 64)
    assert np.array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.rgb, c.rgb)
    assert a.rgb.dtype == np.uint8 and a.rgb.shape == (64, 64, 3)


def test_synthetic_shape_families_carry_their_colours():
    # Discs are warm: more red than blue on average over the disc pictures.
    warm = [render(i, 0, 64) for i in range(40)]
    assert all(len(p.families) >= 2 for p in warm)
    dark_outline = [(p.rgb.sum(axis=2) < 120).mean() for p in warm]
    assert min(dark_outline) > 0.005  # every picture has outlines


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


def test_synthetic_fewer_images_removes_the_extra_files(tmp_path):
    acquire_synthetic(5, 48, 0, tmp_path)
    rows = acquire_synthetic(3, 48, 0, tmp_path)
    from colorization.acquire import _remove_unlisted

    _remove_unlisted(tmp_path, rows)
    assert len(list((tmp_path / "images").iterdir())) == 3


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


def test_cli_folder_source_with_only_bad_files_exits_nonzero(tmp_path, small_params):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox/x.png").write_text("no")
    cmd = [
        sys.executable,
        "-m",
        "colorization",
        "acquire",
        "--params",
        str(small_params),
        "--source",
        "folder",
        "--input",
        str(tmp_path / "inbox"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: no valid image acquired from source 'folder'" in result.stderr


def test_decode_rejects_html_and_empty():
    with pytest.raises(ImageRejected, match="empty"):
        decode_rgb(b"")
    with pytest.raises(ImageRejected, match="not a JPEG"):
        decode_rgb(b"<!doctype html><html></html>")
