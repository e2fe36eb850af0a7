"""The three models and their on-disk format, a folder `models/<kind>/`: model.pt (the inference network's
state_dict, `weights_only` loadable), config.json ({"kind", "arch": constructor kwargs, "image_size",
"hint_bins", "hint_format", "lineart": its data's config.LineartRecipe (older models: none), "local_format"
if local hints}), run.json (the MLflow run that trained it; run_id null when tracking was off), and the
.colorization-output marker. Generators: `forward(lineart [N,1,S,S] in [-1,1], hint [N,512], local=None
[N,4,S,S]) -> RGB [N,3,S,S]` in [-1,1]; the hint net: `forward(lineart) -> logits` (models/hint.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from colorization.atomic import OutputKind
from colorization.config import LineartRecipe
from colorization.histogram import HINT_FORMAT, HIST_BINS
from colorization.local_hints import LOCAL_FORMAT
from colorization.models.specs import SPECS

KINDS = tuple(SPECS)  # cnn, cgan, hint
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
# A folder the project may replace; one written before the marker is known by its weights + config.
MODEL_OUTPUT = OutputKind("model", (WEIGHTS_FILE, CONFIG_FILE))


def build_model(kind: str, cfg: Mapping[str, Any]) -> nn.Module:
    """The inference network of `kind` from its architecture kwargs (config.json's "arch")."""
    if kind not in SPECS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    return SPECS[kind].builders["model"](**dict(cfg))


def model_config(
    kind: str, arch: Mapping[str, Any], image_size: int, lineart: LineartRecipe | None = None
) -> dict[str, Any]:
    config = {"kind": kind, "arch": dict(arch), "image_size": int(image_size)}
    config |= {"hint_bins": HIST_BINS, "hint_format": HINT_FORMAT}  # what load_trained checks hints by
    if arch.get("local_hints"):
        config["local_format"] = LOCAL_FORMAT
    if lineart is not None:
        config["lineart"] = lineart.model_dump(include=set(LineartRecipe.model_fields))
    return config


def model_recipe(config: Mapping[str, Any], source: str) -> LineartRecipe | None:
    """The line-art recipe a model's config records; None for a model saved before recipes were."""
    if "lineart" not in config:
        return None
    try:
        return LineartRecipe.model_validate(config["lineart"])
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in ("lineart", *first["loc"]))
        raise ValueError(f"{source}: config.json's {where}: {first['msg']}") from None


def read_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train the model first (colorization train ...)")
    return json.loads(path.read_text())


class ModelFormatError(ValueError):
    """A model folder this version of the project cannot use; the message is one line."""


def check_hint_format(config: Mapping[str, Any], where: str | Path) -> None:
    """Refuse a model that reads (or writes) hints in another format: its colours would be nonsense."""
    legacy = HINT_FORMAT if config.get("hint_bins", HIST_BINS) == HIST_BINS else None  # before hint_format
    found = config.get("hint_format", legacy)
    if found != HINT_FORMAT:
        raise ModelFormatError(
            f"{where}: the model's hint format is {found or str(config.get('hint_bins')) + ' bins'}, "
            f"this version uses {HINT_FORMAT}"
        )
    local = config.get("local_format")
    if config.get("arch", {}).get("local_hints") and local not in (None, LOCAL_FORMAT):
        raise ModelFormatError(
            f"{where}: the model's local-hint format is {local}, this version uses {LOCAL_FORMAT}"
        )


def read_run(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def load_trained(model_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained inference network in eval mode: the generator for cnn / cgan, the hint net for hint."""
    config = read_config(model_dir)
    check_hint_format(config, model_dir)
    model = build_model(config["kind"], config["arch"])
    model.load_state_dict(torch.load(Path(model_dir) / WEIGHTS_FILE, map_location=device, weights_only=True))
    return model.to(device).eval()
