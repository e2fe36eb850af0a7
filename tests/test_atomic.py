"""Atomic writes: files get the process umask's mode, and clean-up removes only our temporaries."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from colorization.atomic import atomic_path, atomic_save_npy, atomic_write_bytes, remove_stale_temporaries


@pytest.fixture
def umask():
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("mask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)], ids=["022", "027", "002"]
)
def test_atomic_files_take_the_process_umask(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_save_npy(tmp_path / "b.npy", np.zeros(3))
    with atomic_path(tmp_path / "c.pt") as tmp:
        tmp.write_bytes(b"y")  # what torch.save does: open the given path for writing
    for name in ("a.bin", "b.npy", "c.pt"):
        assert mode(tmp_path / name) == expected, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.npy", "c.pt"]


def test_stage_outputs_are_readable_by_others(tmp_path, small_params, umask):
    from colorization.acquire import run_acquire
    from colorization.config import load_params
    from colorization.preprocess import build_preprocess

    umask(0o022)
    params = load_params(small_params)
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "params.yaml"]
    assert len(files) > 30
    assert {p.relative_to(tmp_path).as_posix(): mode(p) for p in files if mode(p) != 0o644} == {}


def test_stale_temporaries_are_only_names_we_make(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        os.link(tmp, tmp_path / tmp.name.replace("x.bin", "y.bin"))  # as a killed run leaves one
        raise RuntimeError
    (tmp_path / ".tmp-notes").write_text("a user's")
    (tmp_path / ".tmp-dir.abcdefgh").mkdir()
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-dir.abcdefgh", ".tmp-notes"]
