"""A local cache of registry versions, so that a repeated `colorize` starts without MLflow.

The first load of `models:/<name>@<alias>` or `models:/<name>/<version>` goes through MLflow
(`registry.load_registered`: resolve, download, deserialise the exported graph, seconds) and
leaves `<cache>/<name>/<version>/` holding `model.pt` and `config.json`, the models/<kind>
folder format, rebuilt from the served graph's weights. It is kept only when that model.pt
has the md5 the registry logged for the version (`model_md5`, the md5 of the model.pt that
training wrote), so the cache holds exactly the registered weights or nothing.

A later load resolves the URI with a light read of the registry (the sqlite store opened
read-only, or a tracking server's REST API), and when the entry for that (name, version) still
has the version's `model_md5`, loads it with `load_trained`: no mlflow import, no artifact
download. A moved alias resolves to another version, hence another entry; a version whose
weights differ (another registry, a re-created one) fails the md5 check and is loaded through
MLflow again, replacing the entry. Anything the light read does not understand falls back to
MLflow, which also gives the one-line errors (missing model, alias, store).

Folder: $COLORIZATION_MODEL_CACHE, else $XDG_CACHE_HOME/lineart-colorization/models (XDG's
default ~/.cache). COLORIZATION_MODEL_CACHE=off turns it off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import torch

from colorization.models import (
    CONFIG_FILE,
    MODEL_OUTPUT,
    WEIGHTS_FILE,
    build_model,
    load_trained,
    read_config,
)

log = logging.getLogger(__name__)

CACHE_ENV = "COLORIZATION_MODEL_CACHE"
# A tracking server that wants credentials is read through MLflow (it knows how to send them).
AUTH_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_CLIENT_CERT_PATH")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def tracking_uri() -> str:
    """`runs.tracking_uri()`, without importing runs (which imports MLflow)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")


def cache_root() -> Path | None:
    """Where entries live; None when the cache is off."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lineart-colorization" / "models"


def entry_dir(root: Path, name: str, version: str) -> Path:
    return root / _SAFE.sub("_", name) / str(int(version))


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None] | None:
    """(name, alias, version) of models:/name@alias or models:/name/<version>; None otherwise."""
    body = uri.removeprefix("models:/")
    if body == uri:
        return None
    if "@" in body:
        name, alias = body.split("@", 1)
        return (name, alias, None) if name and alias else None
    name, _, version = body.partition("/")
    return (name, None, version) if name and version.isdigit() else None


# ---------------------------------------------------------------- the light read of the registry


def _sqlite_resolve(path: Path, name: str, alias: str | None, version: str | None):
    """(version, tags) from MLflow's sqlite store, read-only; None when it does not say."""
    if not path.is_file():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        if alias is not None:
            rows = db.execute(
                "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?", (name, alias)
            ).fetchall()
            if len(rows) != 1:
                return None
            version = str(rows[0][0])
        stage = db.execute(
            "SELECT current_stage FROM model_versions WHERE name = ? AND version = ?", (name, int(version))
        ).fetchall()
        if len(stage) != 1 or stage[0][0] == "Deleted_Internal":  # MLflow's soft delete
            return None
        query = "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?"
        tags = dict(db.execute(query, (name, int(version))).fetchall())
    return version, tags


def _rest_resolve(server: str, name: str, alias: str | None, version: str | None):
    """(version, tags) from a tracking server's REST API; None when it does not answer plainly."""
    import requests

    api = server.rstrip("/") + "/api/2.0/mlflow"
    if alias is not None:
        where, query = "registered-models/alias", {"name": name, "alias": alias}
    else:
        where, query = "model-versions/get", {"name": name, "version": version}
    answer = requests.get(f"{api}/{where}", params=query, timeout=10)
    if answer.status_code != 200:
        return None
    found = answer.json()["model_version"]
    return str(found["version"]), {t["key"]: t["value"] for t in found.get("tags", [])}


def light_resolve(uri: str, tracking: str) -> tuple[str, str, dict[str, str]] | None:
    """(name, version, tags) of a models:/ URI without importing MLflow; None: ask MLflow."""
    parsed = parse_models_uri(uri)
    if parsed is None:
        return None
    name, alias, version = parsed
    try:
        if tracking.startswith("sqlite:///"):
            found = _sqlite_resolve(Path(tracking.removeprefix("sqlite:///")), name, alias, version)
        elif tracking.startswith(("http://", "https://")) and not any(os.environ.get(k) for k in AUTH_ENV):
            found = _rest_resolve(tracking, name, alias, version)
        else:
            return None
    except Exception as err:  # a schema or an answer this does not know: MLflow will say what is wrong
        log.debug("light registry read of %s failed: %s", uri, err)
        return None
    return None if found is None else (name, found[0], found[1])


# ---------------------------------------------------------------- entries


def _md5(path: Path) -> str:
    import hashlib

    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def valid_entry(folder: Path, model_md5: str | None) -> bool:
    """The entry holds exactly the registered weights (and a config to build them with)."""
    weights = folder / WEIGHTS_FILE
    if not model_md5 or not weights.is_file() or not (folder / CONFIG_FILE).is_file():
        return False
    return _md5(weights) == model_md5


def inference_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The inference network's state dict out of what `load_registered` returns.

    An exported graph keeps the serving wrapper's names (`served.generator.*`, `served.hint_net.*`);
    a pickled wrapper's network has its own.
    """
    state = {}
    for key, value in module.state_dict().items():
        key = key.removeprefix("served.")
        for prefix in ("generator.", "hint_net."):
            key = key.removeprefix(prefix)
        state[key] = value.detach().cpu()
    return state


def store_entry(root: Path, name: str, version: str, tags: dict[str, str], module: torch.nn.Module) -> bool:
    """Write the entry for (name, version) if its re-saved weights have the logged md5; True if kept."""
    model_md5, config_text = tags.get("model_md5"), tags.get("config")
    if not model_md5 or not config_text:
        return False  # not registered by `colorization register`: nothing to check an entry against
    final, staging = entry_dir(root, name, version), None
    try:
        config = json.loads(config_text)
        from colorization.atomic import check_replaceable, publish_dir

        check_replaceable(final, MODEL_OUTPUT)  # a folder of someone else's there: leave it, cache nothing
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
        net = build_model(config["kind"], config["arch"])
        net.load_state_dict(inference_state(module))
        torch.save(net.state_dict(), staging / WEIGHTS_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if not valid_entry(staging, model_md5):
            log.info("not caching %s v%s: the rebuilt weights do not have the logged md5", name, version)
            return False
        publish_dir(staging, final, MODEL_OUTPUT)
        return True
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as err:  # a cache that cannot be written
        log.info("not caching %s v%s: %s", name, version, err)
        return False
    finally:
        if staging is not None and staging.exists():
            import shutil

            shutil.rmtree(staging, ignore_errors=True)


def load_cached(uri: str, device: str = "cpu") -> tuple[Any, dict]:
    """`registry.load_registered`, served from the local cache when it holds the registered weights."""
    root = cache_root()
    resolved = light_resolve(uri, tracking_uri()) if root is not None else None
    if resolved is not None:
        name, version, tags = resolved
        folder = entry_dir(root, name, version)
        if valid_entry(folder, tags.get("model_md5")):
            log.debug("%s: v%s from the cache %s", uri, version, folder)
            return load_trained(folder, device), read_config(folder)

    from colorization.tracking.registry import load_registered, resolve_version

    module, config = load_registered(uri, device)
    if root is not None and uri.startswith("models:/"):
        if resolved is None:
            found = resolve_version(uri)
            resolved = (found.name, str(found.version), dict(found.tags))
        store_entry(root, *resolved, module)
    return module, config
