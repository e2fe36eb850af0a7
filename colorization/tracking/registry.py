"""The MLflow model registry: register (idempotent, so DVC may re-run the stage), promote a version
that beats the champion on the same test split, load by URI. docs/registry.md."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from colorization.models import CONFIG_FILE, RUN_FILE, WEIGHTS_FILE, read_config, read_run
from colorization.models.specs import SPECS
from colorization.provenance import file_md5, git_commit
from colorization.tracking import RegistryError, flatten, tracking_uri
from colorization.tracking.descriptions import describe_model, version_description
from colorization.tracking.runs import ensure_experiment

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
Rescore = Callable[[str], dict]  # a champion's URI -> its scores on this evaluation's test split


@dataclass
class Registration:
    """What `register` did for one model; written to metrics/registry.json."""

    name: str
    version: str | None  # None: skipped (trained without MLflow)
    registered: bool  # False: this model was already a version, or was skipped
    promoted: bool
    reason: str
    champion: str | None
    challenger: str | None
    source_run_id: str | None

    @classmethod
    def skipped(cls, name: str, reason: str) -> Registration:
        return cls(name, None, False, False, reason, None, None, None)


def client() -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient(tracking_uri())


def metric_value(evaluation: dict, metric: str) -> float:
    section, key = metric.split(".", 1)
    try:
        return float(evaluation[section][key])
    except (KeyError, TypeError):
        raise RegistryError(
            f"metric {metric} not in the evaluation (sections: {sorted(evaluation)})"
        ) from None


def beats(new: float, old: float, direction: str) -> bool:
    return new > old if direction == "max" else new < old


def _alias_version(c: MlflowClient, name: str, alias: str):
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def decide_promotion(
    c: MlflowClient, name: str, metric: str, direction: str, value: float, split: str, rescore: Rescore | None
) -> tuple[bool, str]:
    """(promote?, why) for a new version scoring `value` on test split `split`: the champion's score
    is read from its tags when scored on the same split, else `rescore(champion_uri)` (like for like)."""
    champion = _alias_version(c, name, CHAMPION)
    if champion is None:
        return True, f"first champion: no earlier {CHAMPION} ({metric} = {value:g})"
    recorded = champion.tags.get(f"metric.{metric}")
    if recorded is not None and champion.tags.get("eval_split") == split:
        old, how = float(recorded), "same test split"
    elif rescore is not None:
        old = metric_value({metric.split(".")[0]: rescore(f"models:/{name}/{champion.version}")}, metric)
        how = "champion re-scored on this test split"
    else:
        return False, f"not promoted: champion v{champion.version} was scored on another test split"
    sign, against = (">" if direction == "max" else "<"), f"{old:g} of champion v{champion.version} ({how})"
    if beats(value, old, direction):
        return True, f"promoted: {metric} {value:g} {sign} {against}"
    return False, f"not promoted: {metric} {value:g} does not beat {against}"


def register_model(
    kind: str,
    name: str,
    metric: str,
    direction: str,
    model_dir: Path,
    evaluation: dict,
    tags: dict[str, str],
    rescore: Rescore | None = None,
) -> Registration:
    """Register models/<kind> as a new version of `name` (unless it already is one) and promote it."""
    for required in (RUN_FILE, WEIGHTS_FILE, CONFIG_FILE):
        if not (model_dir / required).exists():
            raise RegistryError(f"{model_dir / required} not found: run the train@{kind} stage first")
    run_info = read_run(model_dir)
    if not (run_id := run_info.get("run_id")):
        raise RegistryError(
            f"{model_dir} was trained without MLflow (tracking.mlflow: false): nothing to register"
        )
    c = client()
    model_md5 = file_md5(model_dir / WEIGHTS_FILE)
    value = metric_value(evaluation, metric)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"{kind} model of the line-art colorization pipeline")
    config = read_config(model_dir)
    describe_model(c, name, kind, config, tags.get("data_source"))

    versions = c.search_model_versions(f"name='{name}'")  # one made from this run or these weights?
    existing = next((v for v in versions if v.run_id == run_id or v.tags.get("model_md5") == model_md5), None)
    if existing is not None:
        version, registered = existing, False
        champion = _alias_version(c, name, CHAMPION)
        promoted = champion is not None and str(champion.version) == str(existing.version)
        reason = f"already registered as v{existing.version} (run {existing.run_id}); nothing added"
    else:
        section = metric.split(".", 1)[0]
        tags = {
            **tags,
            "kind": kind,
            "source_run_id": run_id,
            "model_md5": model_md5,
            "config": json.dumps(config, separators=(",", ":")),
            "eval_split": str(evaluation.get("split_fingerprint", "unknown")),
            "eval_split_name": str(evaluation.get("split", "test")),
            "promotion_metric": f"{metric} ({direction})",
            **{f"metric.{section}.{k}": str(v) for k, v in evaluation.get(section, {}).items()},
        }
        source = run_info.get("model_uri") or f"runs:/{run_id}/model"  # log_pyfunc's name="model"
        promoted, reason = decide_promotion(c, name, metric, direction, value, tags["eval_split"], rescore)
        version = _add_version(c, kind, name, source, tags, promoted, reason)
        registered = True
    log.info("%s v%s: %s", name, version.version, reason)
    aliased = [_alias_version(c, name, alias) for alias in (CHAMPION, CHALLENGER)]
    champion, challenger = [str(v.version) if v else None for v in aliased]
    return Registration(
        name, str(version.version), registered, promoted, reason, champion, challenger, run_id
    )


def _add_version(c: MlflowClient, kind: str, name: str, source: str, tags: dict[str, str], promoted, reason):
    """A new version of `name` from `source`: challenger, or champion if `promoted`."""
    base = _alias_version(c, name, CHAMPION)  # what the new version challenges
    try:  # the source is the model the training run logged (run.json's model_uri)
        version = mlflow.register_model(source, name, tags=tags)
    except MlflowException as err:
        raise RegistryError(f"cannot register {source} as {name}: {str(err).splitlines()[0]}") from None
    c.set_registered_model_alias(name, CHALLENGER, version.version)
    if promoted:
        c.set_registered_model_alias(name, CHAMPION, version.version)
        c.delete_registered_model_alias(name, CHALLENGER)  # the challenge is decided
    c.set_model_version_tag(name, version.version, "promotion", reason)
    base_info = (str(base.version), dict(base.tags)) if base is not None else None
    text = version_description(kind, tags, base_info, promoted, reason)
    c.update_model_version(name, version.version, description=text)
    return version


def existing_client() -> MlflowClient:
    """The client of a store that is there (opening a missing sqlite file would create an empty one)."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise RegistryError(
            f"no MLflow registry at {uri}: run `dvc repro` (stage register), set MLFLOW_TRACKING_URI, "
            f"or pass a local models/<name> folder"
        )
    return client()


def version_uri(uri: str) -> tuple[str, Any]:
    """(the URI to download, the registered version or None) for a registered version
    (models:/name@alias, models:/name/<version>), a run's model or a logged model (models:/m-<id>)."""
    if not uri.startswith(("runs:/", "models:/")):
        raise RegistryError(
            f"{uri}: expected models:/<name>@<alias>, models:/<name>/<version> or runs:/<run>/model"
        )
    c = existing_client()
    body = uri.removeprefix("models:/")
    if uri.startswith("runs:/") or not ("@" in body or "/" in body):
        return uri, None
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            version = c.get_model_version_by_alias(name, alias)
        else:
            name, _, number = body.partition("/")
            version = c.get_model_version(name, number)
    except MlflowException as err:
        # What MLflow answers for a missing model, version or alias (an absent alias is a bad parameter);
        # any other answer is a server that is down or failing, not a missing model.
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            text = " ".join(str(err).split())[:200]
            raise RegistryError(f"the MLflow registry at {tracking_uri()} cannot be read: {text}") from None
        what = f"no alias {alias!r} on {name!r}" if "@" in body else "no such registered model or version"
        raise RegistryError(f"model not found: {uri} ({what} in {tracking_uri()})") from None
    return f"models:/{version.name}/{version.version}", version


def download_model(uri: str, dst: Path) -> Path:
    """Download a logged model into `dst`; returns its models/<kind> folder (model.pt + config.json)."""
    from colorization.tracking.serving import ARTIFACT

    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except (MlflowException, OSError) as err:
        raise RegistryError(f"cannot load {uri}: {str(err).splitlines()[0]}") from None
    folder = root / "artifacts" / ARTIFACT
    if not (folder / CONFIG_FILE).is_file():
        raise RegistryError(
            f"{uri} holds no artifacts/{ARTIFACT}/{CONFIG_FILE}: it was logged by an older version "
            f"of this project; re-train it (dvc repro -f train) and register it again"
        )
    return folder


def list_versions(names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """{name: [{"version", "aliases"}, newest first]} for each registered name that exists."""
    c = existing_client()
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        for name in names:
            try:
                model = c.get_registered_model(name)
            except MlflowException as err:
                if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                    continue
                raise
            aliases = (model.aliases or {}).items()
            versions = sorted(
                (int(v.version) for v in c.search_model_versions(f"name='{name}'")), reverse=True
            )
            found[name] = [
                {"version": str(v), "aliases": sorted(a for a, n in aliases if str(n) == str(v))}
                for v in versions
            ]
    except Exception as err:  # a server that is down, a store that cannot be read: one line
        text = " ".join(str(err).split())[:200]
        raise RegistryError(f"the MLflow registry at {tracking_uri()} cannot be read: {text}") from None
    return found


def _numeric(flat: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_evaluation(experiment: str, result: dict, figure: Path, source_runs: dict[str, str]) -> str:
    """An `evaluate` run holding all metrics and the figure; each training run gets its own test
    metrics, so a model version's test scores are on the run the registry links it to."""
    experiment_id = ensure_experiment(experiment)
    c = client()
    run_tags = {"stage": "evaluate", "git_commit": git_commit()}
    run_tags |= {f"source_run.{kind}": run_id for kind, run_id in source_runs.items()}
    with mlflow.start_run(experiment_id=experiment_id, run_name="evaluate", tags=run_tags) as run:
        mlflow.log_metrics(_numeric(flatten(result)))
        mlflow.log_dict(result, "evaluation.json")
        mlflow.log_artifact(str(figure), "reports")
    for kind, run_id in source_runs.items():
        scores = {f"test.{s}": result[s] for s in SPECS[kind].evaluated if s in result}
        try:
            for key, value in _numeric(flatten(scores)).items():
                c.log_metric(run_id, key, value)
        except MlflowException as err:  # a run from another store: the evaluate run still has it all
            log.warning("could not add test metrics to run %s: %s", run_id, str(err).splitlines()[0])
    return run.info.run_id
