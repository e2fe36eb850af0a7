"""Atomic writes: files get the process umask's mode, clean-up removes only our temporaries, and a
published folder replaces only a folder the project wrote."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from colorization.atomic import (
    OUTPUT_MARKER,
    NotOurFolder,
    OutputKind,
    atomic_path,
    atomic_save_npy,
    atomic_write_bytes,
    fresh_staging,
    publish_dir,
    remove_stale_temporaries,
)

KIND = OutputKind("thing", legacy=("index", "meta"))


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


def staged(tmp_path: Path, text: str) -> Path:
    staging = fresh_staging(tmp_path / "out", KIND)
    (staging / "data").write_text(text)
    return staging


def test_a_published_folder_replaces_nothing_but_the_projects_own(tmp_path):
    final = tmp_path / "out"
    publish_dir(staged(tmp_path, "1"), final, KIND)  # nothing there
    assert (final / OUTPUT_MARKER).read_text() == "thing\n"
    publish_dir(staged(tmp_path, "2"), final, KIND)  # its own, marked
    assert (final / "data").read_text() == "2"
    (final / OUTPUT_MARKER).unlink()
    (final / "index").touch()
    (final / "meta").touch()
    publish_dir(staged(tmp_path, "3"), final, KIND)  # an earlier version's: known by its files
    assert (final / "data").read_text() == "3"
    final.rename(tmp_path / "emptied")
    final.mkdir()
    publish_dir(staged(tmp_path, "4"), final, KIND)  # an empty folder
    assert sorted(p.name for p in final.iterdir()) == [OUTPUT_MARKER, "data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emptied", "out"]  # no staging, no old copy left


@pytest.mark.parametrize("what", ["user files", "other kind", "a file", "half the legacy files", "a link"])
def test_a_folder_the_project_did_not_write_is_refused_untouched(tmp_path, what):
    final = tmp_path / "out"
    if what == "a file":
        final.write_text("precious")
    elif what == "a link":
        (tmp_path / "elsewhere").mkdir()
        final.symlink_to(tmp_path / "elsewhere")
    else:
        final.mkdir()
        (final / "precious.txt").write_text("precious")
        if what == "other kind":
            (final / OUTPUT_MARKER).write_text("model\n")
        elif what == "half the legacy files":
            (final / "index").touch()
    (tmp_path / "out.old").mkdir()  # the old code's name for the replaced copy: the user's here
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    staging = staged(tmp_path, "new")
    with pytest.raises(NotOurFolder) as err:
        publish_dir(staging, final, KIND)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{final}: not a thing folder this project wrote")
    after = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    after = {p: data for p, data in after.items() if staging not in p.parents}
    assert after == {**before, staging: None}  # everything as it was; the staging not consumed
