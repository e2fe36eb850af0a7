"""A local copy of each registered version (used while its model.pt has the registered md5): a repeated
`colorize` downloads nothing, and on an unchanged SQLite store skips MLflow. docs/colorize.md."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from colorization.atomic import atomic_write_text, check_replaceable, publish_dir
from colorization.models import CONFIG_FILE, MODEL_OUTPUT, WEIGHTS_FILE, load_trained, read_config
from colorization.provenance import file_md5
from colorization.tracking import tracking_uri

log = logging.getLogger(__name__)

CACHE_ENV = "COLORIZATION_MODEL_CACHE"


def cache_root() -> Path | None:
    """Where entries live; None when the cache is off."""
    if setting := os.environ.get(CACHE_ENV, ""):
        return None if setting.lower() == "off" else Path(setting)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lineart-colorization" / "models"


def entry_dir(root: Path, name: str, version: str) -> Path:
    return root / re.sub(r"[^A-Za-z0-9._-]", "_", name) / str(int(version))


def valid_entry(folder: Path, model_md5: str | None) -> bool:
    weights = folder / WEIGHTS_FILE
    found = bool(model_md5) and weights.is_file() and (folder / CONFIG_FILE).is_file()
    return found and file_md5(weights) == model_md5


def store_entry(folder: Path, entry: Path, model_md5: str | None) -> bool:
    """Copy a downloaded model folder to `entry` if its weights have the logged md5; True if kept."""
    if not valid_entry(folder, model_md5):
        log.info("not caching %s: its weights do not have the registered md5", entry)
        return False
    try:
        check_replaceable(entry, MODEL_OUTPUT)  # a folder of someone else's there: leave it, cache nothing
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            prefix=f".tmp-{entry.name}-", dir=entry.parent, ignore_cleanup_errors=True
        ) as staging:  # gone once published
            for name in (WEIGHTS_FILE, CONFIG_FILE):
                shutil.copy2(folder / name, Path(staging) / name)
            publish_dir(Path(staging), entry, MODEL_OUTPUT)
        return True
    except (OSError, ValueError) as err:  # unwritable, or a folder we did not write: the model still loads
        log.info("not caching %s: %s", entry, err)
        return False


def store_stamp(tracking: str) -> list | None:
    """A SQLite store's files' sizes and mtimes (None for a server store or a missing file: ask MLflow)."""
    if not tracking.startswith("sqlite:///"):
        return None
    db = Path(tracking.removeprefix("sqlite:///")).resolve()
    stamp = []
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-journal")):
        try:
            info = path.stat()
            stamp.append([str(path), info.st_size, info.st_mtime_ns])
        except FileNotFoundError:
            if path == db:
                return None
    return stamp


def resolution_file(root: Path, uri: str, tracking: str) -> Path:
    key = hashlib.sha256(f"{tracking}\n{uri}".encode()).hexdigest()[:24]
    return root / "resolved" / f"{key}.json"


def remembered(root: Path, uri: str, tracking: str, stamp: list | None) -> Path | None:
    """The cached entry `uri` resolved to, when the store is untouched since and the entry valid."""
    try:
        known = json.loads(resolution_file(root, uri, tracking).read_text())
    except (OSError, ValueError):
        return None
    if stamp is None or known.get("stamp") != stamp:
        return None
    entry = entry_dir(root, known["name"], known["version"])
    return entry if valid_entry(entry, known.get("model_md5")) else None


def remember(root: Path, uri: str, tracking: str, stamp: list | None, version) -> None:
    """Note what `uri` resolved to under `stamp` (taken before resolving: a write since makes it stale)."""
    if stamp is None:
        return
    known = {"name": version.name, "version": str(version.version)}
    known |= {"model_md5": version.tags.get("model_md5"), "stamp": stamp}
    try:
        path = resolution_file(root, uri, tracking)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(known))
    except OSError as err:  # an unwritable cache: the next start-up asks MLflow again
        log.info("not remembering %s: %s", uri, err)


def load_registered(uri: str, device: str = "cpu") -> tuple[Any, dict]:
    """(network in eval mode, config.json) of a registered version or a logged model."""
    root, tracking = cache_root(), tracking_uri()
    stamp = store_stamp(tracking) if root else None  # before resolving: a write since makes it stale
    if root and (entry := remembered(root, uri, tracking, stamp)) is not None:
        log.debug("%s: %s from the cache, the store unchanged", uri, entry)
        return load_trained(entry, device), read_config(entry)
    from colorization.tracking.registry import download_model, version_uri

    load_uri, version = version_uri(uri)
    digest = version.tags.get("model_md5") if version is not None else None
    entry = entry_dir(root, version.name, version.version) if root and version else None
    if entry is not None and valid_entry(entry, digest):
        log.debug("%s: v%s from the cache %s", uri, version.version, entry)
        remember(root, uri, tracking, stamp, version)
        return load_trained(entry, device), read_config(entry)
    with tempfile.TemporaryDirectory(prefix="colorization-model-") as tmp:
        folder = download_model(load_uri, Path(tmp))
        if entry is not None and store_entry(folder, entry, digest):
            folder = entry
            remember(root, uri, tracking, stamp, version)
        return load_trained(folder, device), read_config(folder)
