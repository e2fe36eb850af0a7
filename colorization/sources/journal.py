"""Resume journal of a downloading source: JSON lines in the output folder, fsynced per decision.

A name is journalled before its image is written, "accepted" after its rename, so a SIGKILL never
leaves an accepted file missing; a file only "writing" names is an *orphan*, taken by the resumed run
(deleted if unclaimed). Only names the journal recorded are ever deleted: a user's files are safe.

    {"writing": "images/safebooru-ID.EXT"}       about to be written (an orphan until accepted)
    {"accepted": <manifest row>, "bytes": N}     image on disk, N bytes
    {"rejected": <row>, "post_id": ID, "settings": {...}}  not fetched again under the same settings
    {"crawl_done": NEWEST_ID}                    a run finished cleanly having seen up to NEWEST_ID
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from colorization.atomic import atomic_write_bytes, remove_stale_temporaries
from colorization.manifest import IMAGES_DIR


@dataclass
class JournalState:
    accepted: dict[int, dict] = field(default_factory=dict)  # post id -> manifest row (file present)
    sizes: dict[int, int] = field(default_factory=dict)  # post id -> its accepted file's journalled bytes
    rejected: dict[int, dict] = field(default_factory=dict)  # post id -> rejected row
    orphans: dict[int, Path] = field(default_factory=dict)  # post id -> complete file only "writing" names
    writing: set[str] = field(default_factory=set)  # paths journalled as being written, not yet accepted
    crawl_done: int | None = None  # newest id a finished run had seen


class Journal:
    def __init__(self, out_dir: Path, source: str) -> None:
        self.out_dir, self.source = Path(out_dir), source
        self.path = self.out_dir / f".{source}-journal.jsonl"
        self._name = re.compile(rf"^{re.escape(source)}-(\d+)\.(jpg|png|webp)$")
        self._lock = threading.Lock()
        self._fh = None
        self.settings: dict = {}

    def relative_path(self, post_id: int, ext: str) -> str:
        # Named by post id only: a server-given name never becomes a path.
        return f"{IMAGES_DIR}/{self.source}-{post_id}.{ext}"

    def open(self, settings: dict) -> JournalState:
        """Reconcile journal and disk, rewrite the journal compactly, open it for appending; rejections
        made under other `settings` are forgotten (a lower min_size: another chance)."""
        self.settings = settings
        (self.out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir)  # the images' and the journal's own
        state = self._read(settings)
        self._check_files(state)
        lines = [_accepted(row, state.sizes[i]) for i, row in state.accepted.items()]
        lines += [_rejected(i, row, settings) for i, row in state.rejected.items()]
        lines += [{"writing": rel} for rel in sorted(state.writing)]  # orphans stay known across a kill
        if state.crawl_done is not None:
            lines.append({"crawl_done": state.crawl_done})
        atomic_write_bytes(self.path, b"".join(_encode(line) for line in lines))
        self._fh = open(self.path, "ab")  # noqa: SIM115 -- held open for the whole run
        return state

    def _read(self, settings: dict) -> JournalState:
        state = JournalState()
        if not self.path.exists():
            return state
        for line in self.path.read_bytes().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-append
            if not isinstance(record, dict):
                continue
            if isinstance(record.get("writing"), str):
                state.writing.add(record["writing"])
            elif isinstance(record.get("accepted"), dict) and isinstance(record.get("bytes"), int):
                row = record["accepted"]
                if isinstance(row.get("post_id"), int) and isinstance(row.get("path"), str):
                    state.accepted[row["post_id"]] = row
                    state.sizes[row["post_id"]] = record["bytes"]
                    state.rejected.pop(row["post_id"], None)
                    state.writing.discard(row["path"])
            elif isinstance(record.get("rejected"), dict) and isinstance(record.get("post_id"), int):
                if record.get("settings") == settings:
                    state.rejected[record["post_id"]] = record["rejected"]
            elif isinstance(record.get("crawl_done"), int):
                state.crawl_done = max(state.crawl_done or 0, record["crawl_done"])
        return state

    def _check_files(self, state: JournalState) -> None:
        for post_id, row in list(state.accepted.items()):
            file = self.out_dir / row["path"]
            if row["path"] != self.relative_path(post_id, file.suffix.lstrip(".")):
                del state.accepted[post_id]  # not a path we would have written: ignore the line
            elif not file.is_file() or file.stat().st_size != state.sizes[post_id]:
                file.unlink(missing_ok=True)
                del state.accepted[post_id]
        held = {row["path"] for row in state.accepted.values()}
        for rel in sorted(state.writing - held):  # journalled, written, never accepted: ours
            file = self.out_dir / rel
            match = self._name.match(file.name)
            ours = match and rel == self.relative_path(int(match.group(1)), match.group(2))
            if not ours or not file.is_file() or file.is_symlink():
                continue  # not a name we would have written (not ours to touch), or no file
            if state.orphans.setdefault(int(match.group(1)), file) != file:
                file.unlink()  # a second file of one post (another format): ours, and unneeded
        state.writing = {file.relative_to(self.out_dir).as_posix() for file in state.orphans.values()}

    def append(self, record: dict) -> None:
        if self._fh is None:
            raise RuntimeError("journal is not open")
        with self._lock:
            self._fh.write(_encode(record))
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def record_accepted(self, row: dict, size: int) -> None:
        self.append(_accepted(row, size))

    def record_rejected(self, post_id: int, row: dict) -> None:
        self.append(_rejected(post_id, row, self.settings))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _accepted(row: dict, size: int) -> dict:
    return {"accepted": row, "bytes": size}


def _rejected(post_id: int, row: dict, settings: dict) -> dict:
    return {"rejected": row, "post_id": post_id, "settings": settings}


def _encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode() + b"\n"
