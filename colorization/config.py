"""Typed configuration: every knob of every stage, loaded from params.yaml.

`load_params` validates the whole file before any work starts; a bad value raises
`ParamsError` whose message is one line naming the key and the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS = Path("params.yaml")

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class ParamsError(ValueError):
    """A params file that cannot be used; the message is one line."""


class Strict(BaseModel):
    # Every key is required and unknown keys are errors: a typo must not silently
    # fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- acquire


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
    requests_per_second: Annotated[float, Field(ge=0.0)]  # 0 = no limit
    concurrent_downloads: PositiveInt
    timeout_s: PositiveFloat
    max_retries: NonNegInt
    max_bytes: PositiveInt
    page_size: Annotated[int, Field(gt=0, le=1000)]
    incremental: bool
    user_agent: str


class AcquireParams(Strict):
    source: Literal["synthetic", "folder", "safebooru"]
    out: str
    min_size: PositiveInt
    seed: int
    synthetic: SyntheticSource
    folder: FolderSource
    safebooru: SafebooruSource


# ---------------------------------------------------------------- lineart


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


class LineartParams(Strict):
    raw: str
    out: str
    image_size: Annotated[int, Field(ge=16)]
    resize: Literal["center_crop", "pad"]
    extractor: Literal["canny", "xdog"]
    canny: CannyParams
    xdog: XDoGParams
    dilate: NonNegInt  # extra line thickness in pixels
    shard_size: PositiveInt
    workers: NonNegInt  # 0 = all cores
    split: SplitParams


class HistogramParams(Strict):
    raw: str
    out: str
    workers: NonNegInt


# ---------------------------------------------------------------- root


class Params(Strict):
    seed: int
    acquire: AcquireParams
    lineart: LineartParams
    histograms: HistogramParams
    # Later stages own their sections; kept as plain mappings until their module
    # gives them a typed model (see colorization.config_train etc.).
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: dict[str, Any] = Field(default_factory=dict)
    registry: dict[str, Any] = Field(default_factory=dict)
    pipeline: dict[str, Any] = Field(default_factory=dict)


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    kind = first["type"]
    if kind == "missing":
        problem = "missing key"
    elif kind == "extra_forbidden":
        problem = "unknown key"
    else:
        problem = first["msg"].removeprefix("Value error, ")
        if "input" in first and not isinstance(first["input"], dict):
            problem += f" (got {first['input']!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {key}: {problem}{more}"


def set_by_dotted_key(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ParamsError(f"override {dotted}: {part} is not a section")
        node = node[part]
    if parts[-1] not in node:
        raise ParamsError(f"override {dotted}: unknown key")
    node[parts[-1]] = value


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate params; `overrides` maps dotted keys to values (CLI flags)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            set_by_dotted_key(data, key, value)
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format_error(err, str(path))) from None
