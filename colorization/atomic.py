"""Atomic file publishing: write to a temporary sibling, fsync, then rename.

A reader (or a resumed run) therefore sees either the old file, the complete new
file, or nothing -- never a half-written one.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TMP_PREFIX = ".tmp-"
_TMP_NAME = re.compile(r"^\.tmp-.+\.[a-z0-9_]{8}$")


def _create_temporary(path: Path) -> Path:
    """An empty new file beside `path`, created with mode 0666 less the process umask.

    Not tempfile.mkstemp: that makes 0600 files whatever the umask, so every published
    file (images, shards, manifests) would be unreadable to other users and services.
    """
    for _ in range(100):
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def publish_dir(staging: Path, final: Path) -> None:
    """Replace directory `final` by `staging` with two renames (old copy removed after)."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def is_temporary(path: Path) -> bool:
    """A temporary `atomic_path` names: `.tmp-<name>.<8 random characters>`, a plain file."""
    return bool(_TMP_NAME.match(path.name)) and path.is_file() and not path.is_symlink()


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporaries a killed run left behind; returns how many.

    Only names this module makes are touched: a user's `.tmp-notes` is not ours.
    """
    count = 0
    if folder.is_dir():
        for tmp in folder.rglob(TMP_PREFIX + "*"):
            if is_temporary(tmp):
                tmp.unlink(missing_ok=True)
                count += 1
    return count
