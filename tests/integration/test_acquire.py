"""`colorization acquire` run as a child process: exit codes, refusals and its log lines."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from colorization.acquire import FoldersOverlap, run_acquire
from colorization.config import load_params
from tests.conftest import random_bgr, write_image


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


# ---------------------------------------------------------------- only ever delete what we wrote


def acquire_cli(params: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "colorization", "acquire", "--params", str(params), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_acquire_refuses_an_output_folder_overlapping_the_input(tmp_path, small_params):
    pictures = tmp_path / "pictures"
    write_image(pictures / "images/mine.png", random_bgr(80, 80, 1))  # looks like an output folder
    write_image(pictures / "holiday.jpg", random_bgr(90, 120, 2))
    (pictures / "notes.txt").write_text("my notes")
    before = tree(pictures)
    for inp, out in [(pictures, pictures), (pictures, pictures / "raw"), (pictures / "images", pictures)]:
        result = acquire_cli(small_params, "--source", "folder", "--input", str(inp), "--out", str(out))
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "input folder" in lines[0], lines
        assert tree(pictures) == before  # nothing written, nothing removed
    params = load_params(small_params, {"acquire.source": "folder", "acquire.folder.input": str(pictures)})
    with pytest.raises(FoldersOverlap):
        run_acquire(params.acquire.model_copy(update={"out": str(pictures)}))


def test_acquire_removes_only_files_a_previous_manifest_recorded(tmp_path, small_params):
    out = tmp_path / "raw"
    own = {"images/mine.png": random_bgr(70, 70, 7), "images/sub/deep.png": random_bgr(70, 70, 8)}
    for rel, image in own.items():
        write_image(out / rel, image)
    (out / "images/notes.txt").write_text("not an image, not ours")
    (out / "images/.tmp-keep").write_text("a user's file that merely looks like a temporary")
    users = dict(tree(out))

    inbox = tmp_path / "inbox"
    for i in range(3):
        write_image(inbox / f"p{i}.png", random_bgr(80, 80, 20 + i))
    first = acquire_cli(small_params, "--source", "folder", "--input", str(inbox), "--out", str(out))
    assert first.returncode == 0, first.stderr
    written = {r["path"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert len(written) == 3
    assert {rel: tree(out)[rel] for rel in users} == users

    (inbox / "p0.png").unlink()  # the next run has one image fewer: its stored copy goes
    second = acquire_cli(small_params, "--source", "folder", "--input", str(inbox), "--out", str(out))
    assert second.returncode == 0, second.stderr
    kept = {r["path"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert len(kept) == 2 and kept < written
    on_disk = set(tree(out))
    assert not (written - kept) & on_disk  # the dropped image is removed ...
    assert set(users) <= on_disk and {rel: tree(out)[rel] for rel in users} == users  # ... and only it

    # A manifest naming paths outside its images folder (edited by hand) removes none of them.
    import pyarrow as pa

    table = pq.read_table(out / "manifest.parquet")
    forged = table.set_column(2, "path", pa.array(["../notes.txt", "images/../../outside.txt"]))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "outside.txt").write_text("y")
    pq.write_table(forged, out / "manifest.parquet")
    third = acquire_cli(small_params, "--source", "folder", "--input", str(inbox), "--out", str(out))
    assert third.returncode == 0, third.stderr
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "outside.txt").exists()


def test_a_newline_in_a_file_name_cannot_forge_a_log_line(tmp_path, small_params):
    inbox = tmp_path / "inbox"
    write_image(inbox / "ok.png", random_bgr(80, 80, 1))
    forged = "INFO colorization.acquire: acquire: 0 accepted, 0 rejected"
    (inbox / f"x\n{forged}\x1b[2K.png").write_bytes(b"not an image")
    result = acquire_cli(small_params, "--source", "folder")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith(forged) for line in lines), lines
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 1 and f"x\\n{forged}\\x1b[2K.png: not a JPEG" in skipped[0], skipped
    item = pq.read_table(tmp_path / "raw/rejected.parquet")["item"][0].as_py()
    assert item.endswith(f"x\n{forged}\x1b[2K.png")  # the data keeps the real name
