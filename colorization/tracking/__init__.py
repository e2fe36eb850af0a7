"""MLflow lives here and nowhere else in the package; import `runs` and `registry` lazily (training
must run without mlflow installed). This file imports no MLflow (a cached model's start-up)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # else a store in the working dir


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (MLflow params and metrics are flat)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value}
    return flat


class RegistryError(ValueError):
    """A registry request that cannot be served; the message is one line."""
