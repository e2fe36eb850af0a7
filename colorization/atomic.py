"""Atomic publishing (a temporary sibling, fsync, rename): a reader sees the old file or the new one.
Folders too (`publish_dir`), replacing only those whose `OUTPUT_MARKER` says the project wrote them."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colorization.textsafe import escaped

TMP_PREFIX = ".tmp-"
_TMP_NAME = re.compile(r"^\.tmp-.+\.[a-z0-9_]{8}$")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):  # a new file, mode 0666 less the umask (mkstemp's 0600 would lock others out)
        tmp_path = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
        with suppress(FileExistsError):
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
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
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save adds no ".npy"
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def atomic_write_parquet(path: str | os.PathLike, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


OUTPUT_MARKER = ".colorization-output"  # in every folder the project publishes: "<kind>\n"


class NotOurFolder(ValueError):
    """An output folder holds something the project did not write: it is not replaced."""


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder the project publishes; `legacy`: the files such a folder held before the
    marker existed, so an earlier version's outputs are still replaced."""

    name: str
    legacy: tuple[str, ...] = ()

    def wrote(self, folder: Path) -> bool:
        marker = folder / OUTPUT_MARKER
        if marker.is_file():
            return marker.read_text(errors="replace").strip() == self.name
        return bool(self.legacy) and all((folder / name).is_file() for name in self.legacy)


def check_replaceable(final: str | os.PathLike, kind: OutputKind) -> None:
    """NotOurFolder unless `final` is absent, empty, or a folder this project wrote as `kind` (stages
    call it before their work too, so a refusal comes at once)."""
    final = Path(final)
    if not os.path.lexists(final):
        return
    if final.is_dir() and not final.is_symlink() and (not any(final.iterdir()) or kind.wrote(final)):
        return
    raise NotOurFolder(
        f"{escaped(final)}: not a {kind.name} folder this project wrote (no {OUTPUT_MARKER} saying so); "
        "nothing there was touched - choose a new or empty folder"
    )


def mark_output(folder: Path, kind: OutputKind) -> None:
    atomic_write_text(folder / OUTPUT_MARKER, kind.name + "\n")


def fresh_staging(final: Path, kind: OutputKind) -> Path:
    """An empty folder `.tmp-<name>` beside `final` to build it in; a killed run's one is cleared first."""
    staging = final.with_name(f"{TMP_PREFIX}{final.name}")
    if os.path.lexists(staging):
        check_replaceable(staging, kind)  # bears our marker: a killed run's, not a user's folder
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    mark_output(staging, kind)
    return staging


def publish_dir(staging: Path, final: Path, kind: OutputKind) -> None:
    """Replace folder `final` (if `check_replaceable`) by `staging`: two renames, the old copy removed."""
    check_replaceable(final, kind)
    mark_output(staging, kind)
    for stale in final.parent.glob(f".{final.name}.replaced-*"):  # left by a run killed mid-publish
        if stale.is_dir() and not stale.is_symlink() and kind.wrote(stale):
            shutil.rmtree(stale)
    old = final.with_name(f".{final.name}.replaced-{secrets.token_hex(4)}")
    if os.path.lexists(final):
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporaries a killed run left (plain files named as `atomic_path` names them); how many."""
    count = 0
    for tmp in folder.rglob(TMP_PREFIX + "*"):
        if _TMP_NAME.match(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            count += 1
    return count
