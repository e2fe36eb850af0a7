"""Bounded memory on every decode path: huge declared sizes and huge files are refused unread.

The inputs are what a careless or hostile folder holds: a 4 MB PNG declaring 30000 x 30000
pixels (5 GB decoded), one declaring 60000 x 60000 (beyond OpenCV's own limit, which used
to end the stage with a cv2.error traceback), and a sparse 3 GB ".jpg". Each command runs
in a child of a small wrapper process, whose RUSAGE_CHILDREN peak is the command's alone
(this test process's own children from other tests do not count).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from colorization.manifest import write_manifest
from tests.conftest import random_bgr, write_image
from tests.unit.test_images import (
    GIB,
    huge,  # noqa: F401 (a fixture)
)

PEAK_LIMIT = GIB


WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


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


# ---------------------------------------------------------------- every stage, as a process


def test_acquire_folder_rejects_huge_images_in_bounded_memory(huge, tmp_path, small_params):  # noqa: F811
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
def test_preprocess_refuses_a_huge_raw_image_in_one_line(huge, tmp_path, small_params, name):  # noqa: F811
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


def test_colorize_refuses_huge_inputs_and_colours_the_rest(huge, tmp_path, monkeypatch):  # noqa: F811
    from tests.unit.test_evaluate import save_model_dir

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
