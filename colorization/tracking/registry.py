"""The MLflow model registry: register a model version, promote champions, load by URI.

Only MLflow's side; the `register` stage (colorization.register) calls it with each trained
model (`models/<kind>/`, whose run.json names the MLflow run that logged it) and the tags
the stage chose (git commit, DVC hash of the data, params). A new version also gets the
source run and the weights' md5, and the alias `challenger`; it takes `champion` only if it
beats the champion on the declared metric over the same test split, and the tag `promotion`
says why it did or did not. Registering is idempotent: a version whose weights or run are
already registered is never added twice, whatever DVC decides to re-run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from colorization.provenance import file_md5, git_commit
from colorization.tracking.descriptions import describe_model, version_description
from colorization.tracking.runs import tracking_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
LOGGED_MODEL_NAME = "model"  # the name TrainingRun.log_model gives the model inside its run


class RegistryError(ValueError):
    """A registry request that cannot be served; the message is one line."""


# ---------------------------------------------------------------- registering


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
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


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


def _existing_version(c: MlflowClient, name: str, run_id: str, model_md5: str):
    """A version of `name` made from this run or these exact weights, if any."""
    for version in c.search_model_versions(f"name='{name}'"):
        if version.run_id == run_id or version.tags.get("model_md5") == model_md5:
            return version
    return None


def _ensure_registered_model(c: MlflowClient, name: str, description: str) -> None:
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=description)


def decide_promotion(
    c: MlflowClient,
    name: str,
    metric: str,
    direction: str,
    value: float,
    split: str,
    rescore: Callable[[str], dict] | None,
) -> tuple[bool, str]:
    """(promote?, why) for a new version scoring `value` on the test split `split`.

    The champion's score is read from its tags when it was scored on the same split;
    otherwise `rescore(champion_uri)` scores it now on this split, so the comparison is
    always like for like.
    """
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
    sign = ">" if direction == "max" else "<"
    if beats(value, old, direction):
        return True, f"promoted: {metric} {value:g} {sign} {old:g} of champion v{champion.version} ({how})"
    return (
        False,
        f"not promoted: {metric} {value:g} does not beat {old:g} of champion v{champion.version} ({how})",
    )


def register_model(
    kind: str,
    name: str,
    metric: str,
    direction: str,
    model_dir: str | Path,
    evaluation: dict,
    tags: dict[str, str],
    rescore: Callable[[str], dict] | None = None,
) -> Registration:
    """Register models/<kind> as a new version of `name` (unless it already is one) and promote it."""
    model_dir = Path(model_dir)
    run_file, weights, config_file = model_dir / "run.json", model_dir / "model.pt", model_dir / "config.json"
    for required in (run_file, weights, config_file):
        if not required.exists():
            raise RegistryError(f"{required} not found: run the train@{kind} stage first")
    run_info = json.loads(run_file.read_text())
    run_id = run_info.get("run_id")
    if not run_id:
        raise RegistryError(
            f"{model_dir} was trained without MLflow (tracking.mlflow: false): nothing to register"
        )
    c = client()
    model_md5 = file_md5(weights)
    value = metric_value(evaluation, metric)
    split = str(evaluation.get("split_fingerprint", "unknown"))
    _ensure_registered_model(c, name, f"{kind} model of the line-art colorization pipeline")
    config = json.loads(config_file.read_text())
    describe_model(c, name, kind, config, tags.get("data_source"))

    existing = _existing_version(c, name, run_id, model_md5)
    if existing is not None:
        version, registered = existing, False
        champion = _alias_version(c, name, CHAMPION)
        promoted = champion is not None and str(champion.version) == str(existing.version)
        reason = f"already registered as v{existing.version} (run {existing.run_id}); nothing added"
    else:
        section = metric.split(".", 1)[0]
        version_tags = {
            **tags,
            "kind": kind,
            "source_run_id": run_id,
            "model_md5": model_md5,
            "config": json.dumps(config, separators=(",", ":")),
            "eval_split": split,
            "eval_split_name": str(evaluation.get("split", "test")),
            "promotion_metric": f"{metric} ({direction})",
            **{f"metric.{section}.{k}": str(v) for k, v in evaluation.get(section, {}).items()},
        }
        base = _alias_version(c, name, CHAMPION)  # what the new version challenges
        promoted, reason = decide_promotion(c, name, metric, direction, value, split, rescore)
        source = run_info.get("model_uri") or f"runs:/{run_id}/{LOGGED_MODEL_NAME}"
        version = _create_version(name, source, version_tags)
        registered = True
        c.set_registered_model_alias(name, CHALLENGER, version.version)
        if promoted:
            c.set_registered_model_alias(name, CHAMPION, version.version)
            c.delete_registered_model_alias(name, CHALLENGER)  # the challenge is decided
        c.set_model_version_tag(name, version.version, "promotion", reason)
        base_info = (str(base.version), dict(base.tags)) if base is not None else None
        text = version_description(kind, version_tags, base_info, promoted, reason)
        c.update_model_version(name, version.version, description=text)
    log.info("%s v%s: %s", name, version.version, reason)
    champion, challenger = _alias_version(c, name, CHAMPION), _alias_version(c, name, CHALLENGER)
    return Registration(
        name=name,
        version=str(version.version),
        registered=registered,
        promoted=promoted,
        reason=reason,
        champion=str(champion.version) if champion else None,
        challenger=str(challenger.version) if challenger else None,
        source_run_id=run_id,
    )


def _create_version(name: str, source: str, tags: dict[str, str]):
    """A version whose source is the model the training run logged (run.json's model_uri)."""
    try:
        return mlflow.register_model(source, name, tags=tags)
    except MlflowException as err:
        raise RegistryError(f"cannot register {source} as {name}: {str(err).splitlines()[0]}") from None


# ---------------------------------------------------------------- loading


def _check_store_exists(uri: str) -> None:
    # Opening a missing sqlite file would silently create an empty registry in the cwd.
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise RegistryError(
            f"no MLflow registry at {uri}: run `dvc repro` (stage register), set MLFLOW_TRACKING_URI, "
            f"or pass a local models/<name> folder"
        )


# What MLflow answers for a missing model, version or alias (an absent alias is a bad parameter).
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def resolve_version(uri: str):
    """The model version a `models:/name@alias` or `models:/name/<version>` URI points at."""
    if not uri.startswith("models:/"):
        raise RegistryError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    _check_store_exists(tracking_uri())
    c = client()
    body = uri.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return c.get_model_version_by_alias(name, alias)
        name, _, version = body.partition("/")
        return c.get_model_version(name, version)
    except MlflowException as err:
        if err.error_code not in NOT_FOUND_CODES:  # a server that is down or failing: not a missing model
            text = " ".join(str(err).split())[:200]
            raise RegistryError(f"the MLflow registry at {tracking_uri()} cannot be read: {text}") from None
        what = f"no alias {alias!r} on {name!r}" if "@" in body else "no such registered model or version"
        raise RegistryError(f"model not found: {uri} ({what} in {tracking_uri()})") from None


def load_registered(uri: str, device: str = "cpu") -> tuple[Any, dict]:
    """(network in eval mode, its config) for `models:/name@alias`, `models:/name/<version>` or `runs:/...`.

    The network has the interface `colorization.inference` expects, whatever form the
    serving model was logged in (see `as_network`).
    """
    config = None
    if uri.startswith("models:/"):
        version = resolve_version(uri)
        load_uri = f"models:/{version.name}/{version.version}"
        config = json.loads(version.tags["config"]) if "config" in version.tags else None
    elif uri.startswith("runs:/"):
        _check_store_exists(tracking_uri())
        client()
        load_uri = uri
    else:
        raise RegistryError(
            f"{uri}: expected models:/<name>@<alias>, models:/<name>/<version> or runs:/<run>/model"
        )
    try:
        served = mlflow.pytorch.load_model(load_uri, map_location=device)
        config = config or config_from_signature(load_uri)
    except (MlflowException, OSError) as err:
        raise RegistryError(f"cannot load {uri}: {str(err).splitlines()[0]}") from None
    return as_network(served, config).to(device).eval(), config


def list_versions(names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """{name: [{"version", "aliases"}, newest first]} for each registered name that exists.

    For a model picker (the studio); a store that is missing or down is a RegistryError.
    """
    _check_store_exists(tracking_uri())
    c = client()
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        for name in names:
            try:
                model = c.get_registered_model(name)
            except MlflowException as err:
                if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                    continue
                raise
            aliases: dict[str, list[str]] = {}
            for alias, version in (model.aliases or {}).items():
                aliases.setdefault(str(version), []).append(alias)
            versions = sorted(
                (int(v.version) for v in c.search_model_versions(f"name='{name}'")), reverse=True
            )
            found[name] = [{"version": str(v), "aliases": sorted(aliases.get(str(v), []))} for v in versions]
    except Exception as err:  # a server that is down, a store that cannot be read: one line
        text = " ".join(str(err).split())[:200]
        raise RegistryError(f"the MLflow registry at {tracking_uri()} cannot be read: {text}") from None
    return found


def config_from_signature(uri: str) -> dict:
    """Kind and image size from the logged signature: in [N, S*S (+512)], out [N, S, S, 3] or [N, 512];
    the line-art recipe from the logged metadata (training puts it there)."""
    from colorization.histogram import HIST_BINS

    info = mlflow.models.get_model_info(uri)
    signature = info.signature
    if signature is None:
        raise RegistryError(
            f"{uri} has neither a `config` tag nor a signature; register it with `colorization register`"
        )
    width = signature.inputs.inputs[0].shape[-1]
    is_hint = len(signature.outputs.inputs[0].shape) == 2
    pixels = width if is_hint else width - HIST_BINS
    config = {"kind": "hint" if is_hint else "generator", "image_size": int(round(pixels**0.5))}
    recipe = (info.metadata or {}).get("lineart")
    return config | ({"lineart": recipe} if recipe is not None else {})


def as_network(served, config: dict):
    """The inference-interface network behind a serving model.

    A pickled wrapper (colorization.models.serving) still holds the network itself. The
    default pt2 format is a traced graph of the wrapper's packed interface, so it gets an
    adapter that packs and unpacks around it.
    """
    import torch

    from colorization.models.hint import shrink, unshrink
    from colorization.models.serving import PackedColorizer, PackedHint

    if isinstance(served, PackedColorizer):
        return served.generator
    if isinstance(served, PackedHint):
        return served.hint_net
    size = int(config["image_size"])

    def packed_pixels(lineart):
        return ((lineart.float() + 1.0) * 127.5).round().reshape(len(lineart), size * size)

    class Served(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.served = served

        def train(self, mode: bool = True):
            # An exported graph is frozen in eval mode and refuses train()/eval() itself.
            self.training = mode
            return self

    class ServedGenerator(Served):
        """forward(line art [N,1,S,S] in [-1,1], hint [N,512]) -> RGB [N,3,S,S] in [-1,1]."""

        def forward(self, lineart, hint):
            rgb = self.served(torch.cat([packed_pixels(lineart), hint.float()], dim=1))  # [N,S,S,3] 0..255
            return (rgb / 127.5 - 1.0).permute(0, 3, 1, 2)

    class ServedHint(Served):
        """forward(line art [N,1,S,S] in [-1,1]) -> logits whose softmax is the network's guess;
        `automatic` shrinks a guess as the network does (models/hint.py).

        The served graph returns the automatic hint; the guess is recovered from it with the
        trust of the registered config and the graph's prior buffer."""

        def __init__(self):
            super().__init__()
            self.trust = float(config.get("arch", {}).get("trust", 1.0))
            priors = [b for name, b in served.named_buffers() if name.split(".")[-1] == "prior"]
            self.register_buffer("prior", priors[0].detach().clone() if priors else None, persistent=False)

        def forward(self, lineart):
            guess = unshrink(self.served(packed_pixels(lineart)).float(), self.trust, self.prior)
            return torch.log(guess.clamp_min(1e-12))

        def automatic(self, guess):
            return shrink(guess, self.trust, self.prior)

    return ServedHint() if config["kind"] == "hint" else ServedGenerator()


# ---------------------------------------------------------------- evaluate's MLflow side


def _numeric(flat: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_evaluation(experiment: str, result: dict, figure: Path, source_runs: dict[str, str]) -> str:
    """An `evaluate` run holding all metrics and the figure; each training run gets its own test metrics.

    The latter puts a model version's test scores on the run the registry links it to.
    """
    from colorization.tracking.runs import ensure_experiment, flatten

    experiment_id = ensure_experiment(experiment)
    c = client()
    run_tags = {"stage": "evaluate", "git_commit": git_commit()}
    run_tags |= {f"source_run.{kind}": run_id for kind, run_id in source_runs.items()}
    with mlflow.start_run(experiment_id=experiment_id, run_name="evaluate", tags=run_tags) as run:
        mlflow.log_metrics(_numeric(flatten(result)))
        mlflow.log_dict(result, "evaluation.json")
        mlflow.log_artifact(str(figure), "reports")
    from colorization.models.specs import SPECS

    for kind, run_id in source_runs.items():
        evaluated = SPECS[kind].evaluated if kind in SPECS else ()
        scores = {f"test.{s}": result[s] for s in evaluated if s in result}
        try:
            for key, value in _numeric(flatten(scores)).items():
                c.log_metric(run_id, key, value)
        except MlflowException as err:  # a run from another store: the evaluate run still has it all
            log.warning("could not add test metrics to run %s: %s", run_id, str(err).splitlines()[0])
    return run.info.run_id
