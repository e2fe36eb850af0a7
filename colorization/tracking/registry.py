"""The MLflow model registry: register trained models, promote champions, load by URI.

Each trained model (`models/<kind>/`, whose run.json names the MLflow run that logged it)
becomes a version of its registered model, tagged with the git commit, the DVC hash of
the processed data, the params, the source run and the weights' md5. A new version gets
the alias `challenger`; it takes `champion` only if it beats the champion on the declared
metric over the same test split, and the tag `promotion` says why it did or did not.
Registering is idempotent: a version whose weights or run are already registered is
never added twice, whatever DVC decides to re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pytorch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from colorization.tracking.descriptions import describe_model, version_description
from colorization.tracking.runs import tracking_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
LOGGED_MODEL_NAME = "model"  # the name TrainingRun.log_model gives the model inside its run
DATA_OUTS = ("data/processed/lineart", "data/processed/histograms.parquet")


class RegistryError(ValueError):
    """A registry request that cannot be served; the message is one line."""


# ---------------------------------------------------------------- provenance


# What the pipeline itself rewrites in tracked files before `register` runs: never a sign that
# the code or params that made a model differ from the commit.
PIPELINE_OUTPUTS = ("dvc.lock", "metrics/", "plots/")


def pipeline_outputs(cwd: str | Path = ".") -> set[str]:
    """dvc.lock, metrics/, plots/ and every out, metric and plot dvc.yaml declares."""
    found = set(PIPELINE_OUTPUTS)
    try:
        stages = (yaml.safe_load((Path(cwd) / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return found
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in (stage or {}).get(key) or []:
                found.add(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    return found


def _is_output(path: str, outputs: set[str]) -> bool:
    return any(path == o.rstrip("/") or path.startswith(o.rstrip("/") + "/") for o in outputs)


def changed_files(cwd: str | Path = ".") -> list[str] | None:
    """Tracked files that differ from HEAD (staged or not); None outside git."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "-z", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    entries, paths = iter(out.split("\0")), []
    for entry in entries:
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)  # a rename's or copy's original path follows
    return paths


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """Tags for a model's provenance: `git_commit` is HEAD's hash, with '-dirty' only when files
    other than the pipeline's own outputs differ from it; then `git_changed` names them."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown"}
    outputs = pipeline_outputs(cwd)
    others = sorted(p for p in changed_files(cwd) or [] if not _is_output(p, outputs))
    if not others:
        return {"git_commit": head}
    shown = ", ".join(others[:5]) + (f" (+{len(others) - 5} more)" if len(others) > 5 else "")
    return {"git_commit": head + "-dirty", "git_changed": shown}


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD's hash, '-dirty' when files besides the pipeline's outputs differ; 'unknown' outside git."""
    return git_state(cwd)["git_commit"]


def dvc_data_hash(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """md5 of each processed-data output as dvc.lock records it, plus one combined hash."""
    path = Path(lock_path)
    if not path.exists():
        return {"data_md5": "unknown"}
    lock = yaml.safe_load(path.read_text()) or {}
    found = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") in DATA_OUTS:
                found[out["path"]] = out.get("md5", "unknown")
    if not found:
        return {"data_md5": "unknown"}
    combined = hashlib.md5("".join(f"{p}:{found[p]}\n" for p in sorted(found)).encode()).hexdigest()
    return {"data_md5": combined} | {f"data_md5.{Path(p).name}": md5 for p, md5 in sorted(found.items())}


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def trained_run_id(kind: str, model_dir: Path) -> str | None:
    """The MLflow run that trained models/<kind> (None when it was trained without MLflow)."""
    run_file = model_dir / "run.json"
    if not run_file.exists():
        raise RegistryError(f"{run_file} not found: run the train_{kind} stage first")
    return json.loads(run_file.read_text()).get("run_id") or None


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
            raise RegistryError(f"{required} not found: run the train_{kind} stage first")
    run_info = json.loads(run_file.read_text())
    run_id = run_info.get("run_id")
    if not run_id:
        raise RegistryError(
            f"{model_dir} was trained without MLflow (train.mlflow: false): nothing to register"
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


def write_registrations(path: str | Path, registrations: list[Registration]) -> None:
    from colorization.atomic import atomic_write_text

    body = {r.name: asdict(r) for r in registrations}
    atomic_write_text(path, json.dumps(body, indent=2, sort_keys=True) + "\n")


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
    """Kind and image size from the logged signature: in [N, S*S (+512)], out [N, S, S, 3] or [N, 512]."""
    from colorization.histogram import HIST_BINS

    signature = mlflow.models.get_model_info(uri).signature
    if signature is None:
        raise RegistryError(
            f"{uri} has neither a `config` tag nor a signature; register it with `colorization register`"
        )
    width = signature.inputs.inputs[0].shape[-1]
    is_hint = len(signature.outputs.inputs[0].shape) == 2
    pixels = width if is_hint else width - HIST_BINS
    return {"kind": "hint" if is_hint else "generator", "image_size": int(round(pixels**0.5))}


def as_network(served, config: dict):
    """The inference-interface network behind a serving model.

    A pickled wrapper (colorization.models.serving) still holds the network itself. The
    default pt2 format is a traced graph of the wrapper's packed interface, so it gets an
    adapter that packs and unpacks around it.
    """
    import torch

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
        """forward(line art [N,1,S,S] in [-1,1]) -> logits whose softmax is the served histogram."""

        def forward(self, lineart):
            return torch.log(self.served(packed_pixels(lineart)).clamp_min(1e-12))

    return ServedHint() if config["kind"] == "hint" else ServedGenerator()


# ---------------------------------------------------------------- the stages' MLflow side


def params_tag(params, kind: str) -> str:
    """The params that shaped this model: seed, line art, shared training knobs and its own section."""
    train = params.train.model_dump()
    shared = {k: v for k, v in train.items() if k not in ("cnn", "cgan", "hint")}
    picked = {
        "seed": params.seed,
        "lineart": params.lineart.model_dump(exclude={"raw", "out", "workers", "shard_size"}),
        "train": shared | {kind: train[kind]},
    }
    return json.dumps(picked, sort_keys=True, separators=(",", ":"))


def run_register(params) -> list[Registration]:
    """The `register` stage: all three models, then metrics/registry.json."""
    reg = params.registry
    evaluation_path = Path(reg.evaluation)
    if not evaluation_path.exists():
        raise RegistryError(f"{evaluation_path} not found: run the evaluate stage first")
    evaluation = json.loads(evaluation_path.read_text())
    common = {**git_state(), **dvc_data_hash(), "data_source": params.acquire.source}
    split_cache: dict = {}

    def rescorer(kind: str, metric: str) -> Callable[[str], dict]:
        def rescore(uri: str) -> dict:
            from colorization.evaluate import load_split, score_model

            if metric.split(".")[0] != kind:
                raise RegistryError(
                    f"cannot re-score {metric} with the {kind} model alone; declare a {kind}.* metric"
                )
            if "split" not in split_cache:
                split_cache["split"] = load_split(params.evaluate)
            module, _ = load_registered(uri)
            return score_model(kind, module, split_cache["split"], params.evaluate.batch_size)

        return rescore

    results = []
    for kind in ("cnn", "cgan", "hint"):
        spec = getattr(reg.models, kind)
        tags = common | {"params": params_tag(params, kind)}
        model_dir = Path(reg.models_dir) / kind
        if not trained_run_id(kind, model_dir):
            reason = f"skipped: {model_dir} was trained without MLflow (train.mlflow: false)"
            log.info("%s: %s", spec.name, reason)
            results.append(Registration.skipped(spec.name, reason))
            continue
        rescore = rescorer(kind, spec.metric)
        results.append(
            register_model(kind, spec.name, spec.metric, spec.direction, model_dir, evaluation, tags, rescore)
        )
    write_registrations(reg.out, results)
    return results


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
    sections = {"cnn": ("cnn",), "cgan": ("cgan", "cgan_auto_hint"), "hint": ("hint",)}
    for kind, run_id in source_runs.items():
        scores = {f"test.{s}": result[s] for s in sections.get(kind, ()) if s in result}
        try:
            for key, value in _numeric(flatten(scores)).items():
                c.log_metric(run_id, key, value)
        except MlflowException as err:  # a run from another store: the evaluate run still has it all
            log.warning("could not add test metrics to run %s: %s", run_id, str(err).splitlines()[0])
    return run.info.run_id
