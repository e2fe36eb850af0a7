"""Progress bars that stay quiet when stderr is not a terminal (CI, DVC logs, Prefect)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "img") -> Iterator[T]:
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=not sys.stderr.isatty()))


def progress_bar(desc: str, total: int | None = None, unit: str = "img") -> tqdm:
    return tqdm(desc=desc, total=total, unit=unit, disable=not sys.stderr.isatty())
