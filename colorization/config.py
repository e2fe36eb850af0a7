"""Typed configuration of every stage, from params.yaml (whose comments explain each key): a bad
value raises `ParamsError`, one line naming the key and the problem, before any work starts."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS = Path("params.yaml")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegFloat = Annotated[float, Field(ge=0.0)]
ZeroToOne = Annotated[float, Field(ge=0.0, le=1.0)]


class ParamsError(ValueError):
    """A params file that cannot be used; the message is one line."""


class Strict(BaseModel):
    # Every key is required and unknown keys are errors: a typo must not fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSource(Strict):
    count: PositiveInt
    size: Annotated[int, Field(ge=32)]


class FolderSource(Strict):
    input: str


class SafebooruSource(Strict):
    base_url: str
    tags: str
    limit: PositiveInt
    min_size: PositiveInt
    allowed_hosts: list[str]
    requests_per_second: NonNegFloat  # 0 = no limit
    concurrent_downloads: PositiveInt
    timeout_s: PositiveFloat
    max_retries: NonNegInt
    backoff_s: PositiveFloat  # first retry delay; doubles per attempt, with jitter
    max_wait_s: PositiveFloat  # longest single wait; a longer Retry-After fails the request instead
    empty_page_retries: NonNegInt  # the site sometimes sends a spurious empty page mid-listing
    max_bytes: PositiveInt
    page_size: Annotated[int, Field(gt=0, le=1000)]
    incremental: bool
    user_agent: str


class AcquireParams(Strict):
    source: Literal["synthetic", "folder", "safebooru"]
    out: str
    min_size: PositiveInt
    max_pixels: PositiveInt  # width x height read from the header, before decoding
    max_file_bytes: PositiveInt  # folder source; safebooru downloads are capped by safebooru.max_bytes
    seed: int
    synthetic: SyntheticSource
    folder: FolderSource
    safebooru: SafebooruSource


class CannyParams(Strict):
    low: Annotated[int, Field(ge=0, le=1000)]
    high: Annotated[int, Field(ge=0, le=1000)]
    blur: Annotated[int, Field(ge=0)]  # Gaussian kernel size; 0 = no blur, else odd

    @model_validator(mode="after")
    def _ordered(self) -> CannyParams:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.blur and self.blur % 2 == 0:
            raise ValueError(f"blur must be 0 or odd, got {self.blur}")
        return self


class XDoGParams(Strict):
    sigma: PositiveFloat
    k: Annotated[float, Field(gt=1.0)]
    tau: Annotated[float, Field(gt=0.0, le=1.0)]
    epsilon: float
    phi: PositiveFloat


class SplitParams(Strict):
    val: Fraction
    test: Fraction

    @model_validator(mode="after")
    def _leaves_train(self) -> SplitParams:
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test must be below 1 (got {self.val + self.test})")
        return self


class LineartRecipe(Strict):
    # The lines' part of `lineart`: a model's config.json records it, so `colorize` draws alike.
    extractor: Literal["canny", "xdog"]
    canny: CannyParams
    xdog: XDoGParams
    dilate: NonNegInt  # extra line thickness in pixels


class LineartParams(LineartRecipe):
    out: str
    image_size: Annotated[int, Field(ge=16)]
    resize: Literal["center_crop", "pad"]
    shard_size: PositiveInt
    workers: NonNegInt  # 0 = all cores
    max_pixels: PositiveInt  # a raw image over either limit stops the stage, naming the file
    max_file_bytes: PositiveInt
    split: SplitParams

    def recipe(self) -> LineartRecipe:
        return LineartRecipe.model_validate(self.model_dump(include=set(LineartRecipe.model_fields)))


# The lines of a model saved before config.json recorded its recipe: the demo's Canny.
DEFAULT_RECIPE = LineartRecipe(
    extractor="canny",
    canny=CannyParams(low=100, high=200, blur=3),
    xdog=XDoGParams(sigma=0.8, k=1.6, tau=0.98, epsilon=0.0, phi=200.0),
    dilate=0,
)


class HistogramParams(Strict):
    out: str


class AugmentParams(Strict):
    flip: bool  # random horizontal flip
    crop_min: Annotated[float, Field(gt=0.0, le=1.0)]  # smallest random crop side, fraction; 1 = none
    thicken_p: ZeroToOne  # chance of 1 px thicker lines
    line_intensity_min: Annotated[float, Field(gt=0.0, le=1.0)]  # faintest line darkness; 1 = always black
    # Generators only (cnn, cgan): see colorization.augment.
    recolour_p: ZeroToOne  # chance of a random hue turn, hint recomputed
    saturation: Fraction  # recoloured chroma scaled by 1 +- this
    hint_blend_p: ZeroToOne  # chance of a hint mixed with the average hint
    xdog_p: ZeroToOne  # chance of XDoG lines (lineart.xdog) instead of the store's
    local_points_max: NonNegInt  # revealed target patches per picture, at most (with local_hints)
    local_none_p: ZeroToOne  # chance of none at all (the global hint alone)


class ModelTrainParams(Strict):
    steps: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat  # cgan: generator and discriminator
    base_channels: PositiveInt
    depth: PositiveInt  # stride-2 stages; a generator's image_size must be divisible by 2**depth


class CnnTrainParams(ModelTrainParams):
    hint_dim: PositiveInt
    hint_planes: bool  # the hint's mean colour as 3 extra input planes
    local_hints: bool  # takes local colour hints (dots, strokes, a hint layer) as input planes


class CganTrainParams(CnnTrainParams):
    beta1: Fraction  # Adam; pix2pix uses 0.5
    disc_channels: PositiveInt
    disc_layers: PositiveInt
    l1_weight: NonNegFloat  # reconstruction weight (pix2pix lambda = 100)
    uncertain_l2_weight: NonNegFloat  # L2 where the hint is uncertain: mean colours, not L1's median
    local_l1_weight: NonNegFloat  # L1 to the local hints' colours where they are (0: none)
    ema_decay: Fraction  # publish the weights moving average; 0: the last step


class HintTrainParams(ModelTrainParams):
    loss: Literal["kl", "chi2"]  # what is minimised; both are logged
    trust: ZeroToOne  # share of the network's guess in the automatic hint; the rest: the average


class TrainParams(Strict):
    device: Literal["auto", "cpu", "cuda"]  # auto: CUDA when present
    compile: bool  # torch.compile the networks
    seed: int
    checkpoint_every: PositiveInt  # steps
    sample_every: PositiveInt  # steps between sample grids
    log_every: PositiveInt  # steps between progress lines in the log
    lr_decay: ZeroToOne  # last fraction of steps with lr falling linearly to 0
    out: str  # models/<kind>/: each train stage's output
    augment: AugmentParams
    cnn: CnnTrainParams
    cgan: CganTrainParams
    hint: HintTrainParams


class TrackingParams(Strict):
    mlflow: bool  # off, or mlflow not installed: nothing is logged, nothing registered
    experiment: str  # MLflow experiment of the training and evaluation runs


class PipelineParams(Strict):
    # Read by the Prefect flow and its deployment only; no DVC stage tracks them.
    deployment: str  # deployment name: runs are triggered as 'pipeline/<deployment>'
    cron: str  # schedule of the deployment, five fields
    timezone: str  # IANA name the cron is read in
    task_runner: Literal["local", "dask"]  # dask: the preprocess stage maps its shards over Dask
    dask_address: str | None  # scheduler address (tcp://host:8786); null = a temporary LocalCluster
    dask_workers: PositiveInt  # workers of that LocalCluster, one thread each
    retries: NonNegInt  # extra attempts of network steps (acquire)
    retry_delay_s: NonNegFloat  # first retry delay; doubles per attempt
    dvc_push: bool  # push the committed outputs when the repo has a default DVC remote
    overrides: dict[str, Any]  # dotted params keys set for scheduled runs only

    @model_validator(mode="after")
    def _valid_schedule(self) -> PipelineParams:
        if len(self.cron.split()) != 5:
            raise ValueError(f"cron must have five fields (got {self.cron!r})")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


class EvaluateParams(Strict):
    split: Literal["val", "test"]
    max_images: NonNegInt  # 0 = the whole split
    batch_size: PositiveInt
    figure_examples: PositiveInt  # K test images in the comparison figure
    metrics: str  # JSON for `dvc metrics show`
    reports: str  # folder for the figure
    fid_weights: str | None  # local TorchScript Inception; null = no FID (nothing is downloaded)


class RegistryParams(Strict):
    out: str  # versions and aliases after registering (a DVC output); names and rules: models/specs.py


class Params(Strict):
    acquire: AcquireParams
    lineart: LineartParams
    histograms: HistogramParams
    tracking: TrackingParams
    train: TrainParams
    evaluate: EvaluateParams
    registry: RegistryParams
    pipeline: PipelineParams


@dataclass(frozen=True)
class StageInputs:
    """Where a stage reads what the stages before it wrote, as dvc.yaml wires it (`--store ...`)."""

    raw: str  # acquire's folder -> preprocess
    store: str  # preprocess's line-art store -> train, evaluate, register
    histograms: str  # preprocess's colour hints -> train, evaluate, register
    models: str  # the train stages' folder (<models>/<kind>/) -> evaluate, register
    evaluation: str  # evaluate's metrics JSON -> register

    @classmethod
    def of(cls, params: Params, **given: str | Path | None) -> StageInputs:  # `given` paths win
        wired = cls(
            raw=params.acquire.out,
            store=params.lineart.out,
            histograms=params.histograms.out,
            models=params.train.out,
            evaluation=params.evaluate.metrics,
        )
        return replace(wired, **{k: str(v) for k, v in given.items() if v is not None})


def read_yaml(path: Path) -> Any:
    """A YAML file's content ({} when empty); a missing file or bad YAML is one ParamsError line."""
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark, context = getattr(err, "problem_mark", None), getattr(err, "context", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamsError(
            f"{path}: not valid YAML{where}: {problem}" + (f" ({context})" if context else "")
        ) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate params; `overrides` maps dotted keys to values (CLI flags)."""
    path = Path(path)
    data = read_yaml(path)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    file_data = copy.deepcopy(data)
    for dotted, value in given.items():
        *sections, leaf = dotted.split(".")
        section = data
        for part in sections:
            if not isinstance(section.get(part), dict):
                raise ParamsError(f"override {dotted}: {part} is not a section")
            section = section[part]
        if leaf not in section:
            raise ParamsError(f"override {dotted}: unknown key")
        section[leaf] = value
    try:
        return Params.model_validate(data)
    except ValidationError as error:
        err = error
    # One line: it names the override when the file alone is valid and an override is not.
    if given:
        try:
            Params.model_validate(file_data)
        except ValidationError as file_err:  # the file itself is wrong: say so, as without overrides
            err, given = file_err, {}
    first = err.errors()[0]  # the first error, plus a count of the others
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    problem = {"missing": "missing key", "extra_forbidden": "unknown key"}.get(first["type"])
    if problem is None:
        problem = first["msg"].removeprefix("Value error, ")
        if "input" in first and not isinstance(first["input"], dict):
            problem += f" (got {first['input']!r})"
    if err.error_count() > 1:
        problem += f" (+{err.error_count() - 1} more)"
    if not given:
        raise ParamsError(f"{path}: {key}: {problem}")
    # The override at the failing key, or inside the failing section (a section-level check
    # such as canny low < high), or the section an override replaced.
    culprits = [k for k in given if k == key or k.startswith(key + ".") or key.startswith(k + ".")]
    named = ", ".join(f"{k}={_show(given[k])}" for k in culprits or given)
    where = "" if culprits == [key] else f" ({key})"
    raise ParamsError(f"override {named}{where}: {problem}")


def _show(value: Any) -> str:
    """An override value as it would be typed after `--set key=`."""
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else str(value)


# Overrides a Prefect flow run passes to its stage commands (JSON of dotted keys): only keys no
# stage tracks (the flow refuses the others), so dvc.lock stays truthful.
OVERRIDES_ENV = "COLORIZATION_OVERRIDES"


def run_overrides() -> dict[str, Any]:
    """The overrides of the flow run this process is a stage of; {} outside one."""
    text = os.environ.get(OVERRIDES_ENV)
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as err:
        raise ParamsError(f"{OVERRIDES_ENV}: not JSON ({err})") from None
    if not isinstance(overrides, dict):
        raise ParamsError(f"{OVERRIDES_ENV}: expected a JSON object of dotted keys")
    return overrides


def profile_overrides(path: str | Path) -> dict[str, Any]:
    """A profile (YAML of what differs from params.yaml) as dotted overrides: {"lineart.image_size": 64}."""
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: a profile is a mapping of params sections")

    def flatten(node: dict, prefix: str) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            flat |= flatten(value, f"{dotted}.") if isinstance(value, dict) and value else {dotted: value}
        return flat

    return flatten(data, "")
