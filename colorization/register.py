"""The `register` stage: every trained model becomes a version of its registered model, tagged
with its provenance; `tracking.registry` decides the promotion; metrics/registry.json for DVC."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from colorization.atomic import atomic_write_text
from colorization.provenance import dvc_data_hash, git_state

if TYPE_CHECKING:  # MLflow is imported when a model is registered, not with this module
    from colorization.config import Params, StageInputs
    from colorization.tracking.registry import Registration

log = logging.getLogger(__name__)


def params_tag(params, kind: str) -> str:
    """The params that shaped this model (the register stage lists these keys in dvc.yaml)."""
    from colorization.models import KINDS

    train = params.train.model_dump()
    shared = {k: v for k, v in train.items() if k not in KINDS and k != "out"}
    unshaping = {"out", "workers", "shard_size", "max_pixels", "max_file_bytes"}
    picked = {"lineart": params.lineart.model_dump(exclude=unshaping), "train": shared | {kind: train[kind]}}
    return json.dumps(picked, sort_keys=True, separators=(",", ":"))


def run_register(params: Params, inputs: StageInputs) -> list[Registration]:
    """The `register` stage: the models in `inputs.models`, scored in `inputs.evaluation`."""
    from colorization.models import read_run
    from colorization.models.specs import SPECS
    from colorization.tracking.model_cache import load_registered
    from colorization.tracking.registry import Registration, RegistryError, register_model

    evaluation_path = Path(inputs.evaluation)
    if not evaluation_path.exists():
        raise RegistryError(f"{evaluation_path} not found: run the evaluate stage first")
    evaluation = json.loads(evaluation_path.read_text())
    common = {**git_state(), **dvc_data_hash((inputs.store, inputs.histograms))}
    common["data_source"] = params.acquire.source
    split_cache: dict = {}

    def rescore(kind: str, metric: str, uri: str) -> dict:
        from colorization.evaluate import load_split, score_model

        if metric.split(".")[0] != kind:
            raise RegistryError(
                f"cannot re-score {metric} with the {kind} model alone; declare a {kind}.* metric"
            )
        if "split" not in split_cache:
            split_cache["split"] = load_split(params.evaluate, inputs)
        module, _ = load_registered(uri)
        return score_model(kind, module, split_cache["split"], params.evaluate.batch_size)

    results = []
    for kind, spec in SPECS.items():
        (metric, direction), name = spec.ranking, spec.registered
        tags = common | {"params": params_tag(params, kind)}
        model_dir = Path(inputs.models) / kind
        run = read_run(model_dir)  # None: register_model refuses, naming the missing run.json
        if run is not None and not run.get("run_id"):
            reason = f"skipped: {model_dir} was trained without MLflow (tracking.mlflow: false)"
            log.info("%s: %s", name, reason)
            results.append(Registration.skipped(name, reason))
            continue
        rescorer = partial(rescore, kind, metric)
        results.append(register_model(kind, name, metric, direction, model_dir, evaluation, tags, rescorer))
    body = {r.name: asdict(r) for r in results}
    atomic_write_text(params.registry.out, json.dumps(body, indent=2, sort_keys=True) + "\n")
    return results
