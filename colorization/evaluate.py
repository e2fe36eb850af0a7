"""Stage `evaluate`: every method on the test split, scored in chunks (memory bounded by the chunk),
plus the paper's figure. The methods, metrics/evaluation.json's sections and measures: docs/evaluation.md."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from colorization import metrics as m
from colorization.atomic import atomic_write_text
from colorization.config import EvaluateParams, Params, StageInputs
from colorization.device import pick_device
from colorization.figure import Example, comparison_figure
from colorization.histogram import HIST_BINS, mean_colour, one_hot_hint
from colorization.inference import automatic_hint, colorize, predict_hint, takes_local_hints
from colorization.local_eval import OBEDIENCE_POINTS, local_obedience, point_curve, simulated_points
from colorization.models import KINDS, WEIGHTS_FILE, load_trained, read_run, specs
from colorization.models.specs import GENERATOR_KINDS, GENERATOR_METHODS, HINT_KIND, MAIN_KIND, SPECS
from colorization.store import ProcessedStore, Split

log = logging.getLogger(__name__)

BASELINES = ("flat_fill_hint_mean", "flat_fill_train_mean", "grey")  # no model: what beating means
METHODS = (*GENERATOR_METHODS, *BASELINES)  # each generator with each of its spec's hints, then these
RED, BLUE = (255, 0, 0), (0, 0, 255)  # the one-hot hints of the obedience test
FIGURE_FILE = "comparison.png"
DECIMALS = 5


def flat_fill(lineart: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Pictures the size of `lineart`, each one RGB colour ([N, 3] or [3], 0..255) everywhere. No lines
    on top: they cover ~15 % of a 64 px face and cost the fill 2-4 dB (the plain fill is the stronger)."""
    colours = np.broadcast_to(np.round(np.asarray(colours, np.float64)).astype(np.uint8), (len(lineart), 3))
    return np.ascontiguousarray(np.broadcast_to(colours[:, None, None, :], (*lineart.shape, 3)))


def hint_obedience(generator, lineart: np.ndarray, device, batch_size: int) -> np.ndarray:
    """Per image: mean R - B coloured with a pure-red hint minus the same with a pure-blue hint."""

    def red_minus_blue(colour) -> np.ndarray:  # mean R - B per image, in levels
        hint = one_hot_hint(colour, len(lineart))
        rgb = colorize(generator, lineart, hint, device=device, batch_size=batch_size).astype(np.float64)
        return (rgb[..., 0] - rgb[..., 2]).mean(axis=(1, 2))

    return red_minus_blue(RED) - red_minus_blue(BLUE)


def figure_example(models: dict, split: Split, outputs: dict, auto_hints, i: int, j: int) -> Example:
    """Test image `i` (row `j` of its chunk's `outputs`) in the figure: each generator with the true and
    the automatic hint, then the main one with 10 simulated dots (when it takes local hints)."""
    results, palettes = {}, {}
    for method, (kind, variant) in GENERATOR_METHODS.items():
        if variant in specs.SCORED_VARIANTS:
            title = f"{SPECS[kind].label} ({specs.HINT_VARIANTS[variant]})"
            results[title] = outputs[method][j]
            if variant == "auto":  # the palette the hint model predicted, under the result
                palettes[title] = auto_hints[j]
    example = Example(split.ids[i], split.color[i], split.lineart[i], split.hint[i], results, palettes)
    if takes_local_hints(models[MAIN_KIND]):
        points = simulated_points(split.color[i : i + 1], OBEDIENCE_POINTS, i)
        title = f"{SPECS[MAIN_KIND].label} ({specs.HINT_VARIANTS['true']} + dots)"
        lineart, hint = split.lineart[i : i + 1], split.hint[i : i + 1]
        example.results[title] = colorize(models[MAIN_KIND], lineart, hint, local=points)[0]
        example.points, example.dotted = points[0], title
    return example


@dataclass(frozen=True)
class TrainingReference:
    """What a method that sees nothing of the test image can know: the training set's averages."""

    mean_colour: np.ndarray  # float [3], 0..255
    mean_hint: np.ndarray  # float32 [512]

    @classmethod
    def of_store(cls, store: ProcessedStore, split: str = "train") -> TrainingReference:
        return cls(mean_colour=store.mean_colour(split), mean_hint=store.mean_hint(split))


def grey(lineart: np.ndarray) -> np.ndarray:
    return np.repeat(lineart[..., None], 3, axis=-1)


def split_fingerprint(split: Split) -> str:
    """Identity of the evaluated images: a champion is only compared on the same one."""
    digest = hashlib.sha256("\n".join(split.ids).encode())
    for array in (split.color, split.lineart, split.hint):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def load_models(models_dir: str | Path, device: str | None = None) -> dict:
    models = {}
    for name in KINDS:
        folder = Path(models_dir) / name
        if not (folder / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"{folder}/{WEIGHTS_FILE} not found: run the train@{name} stage first")
        models[name] = load_trained(folder, device=device or "cpu")
    return models


def predict_chunk(models: dict, lineart, hints, wrong_hints, reference, device, batch_size):
    """Every method's outputs for one chunk, the hint model's guesses, and the automatic hints from them."""
    guesses = predict_hint(models[HINT_KIND], lineart, device=device, raw=True)
    auto_hints = automatic_hint(models[HINT_KIND], torch.from_numpy(guesses)).numpy()  # what colouring uses
    avg = np.broadcast_to(reference.mean_hint, (len(lineart), HIST_BINS))
    given = {"true": hints, "auto": auto_hints, "avg": avg, "wrong": wrong_hints}
    outputs = {
        method: colorize(models[kind], lineart, given[variant], device=device, batch_size=batch_size)
        for method, (kind, variant) in GENERATOR_METHODS.items()
    }
    outputs["flat_fill_hint_mean"] = flat_fill(lineart, mean_colour(hints))
    outputs["flat_fill_train_mean"] = flat_fill(lineart, reference.mean_colour)
    outputs["grey"] = grey(lineart)
    return outputs, guesses, auto_hints


@dataclass
class Scores:
    """Per-image values, gathered chunk by chunk, averaged at the end."""

    values: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)

    def add(self, section: str, per_image: dict[str, np.ndarray]) -> None:
        for key, value in per_image.items():
            self.values.setdefault(section, {}).setdefault(key, []).append(np.asarray(value, np.float64))

    def means(self) -> dict[str, dict[str, float]]:
        return {
            section: {
                key: round(float(np.concatenate(parts).mean()), DECIMALS) for key, parts in keys.items()
            }
            for section, keys in self.values.items()
        }


def hint_scores(predicted: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    return {"chi2": m.chi2_distance(predicted, true), "kl": m.kl_divergence(true, predicted)}


def evaluate_models(
    models: dict,
    split: Split,
    reference: TrainingReference,
    batch_size: int = 64,
    device: str | None = None,
    figure_examples: int = 0,
    fid_model=None,
    local: bool = True,
) -> tuple[dict, list[Example]]:
    """Every method's scores on `split` (`local`: with the local-hint sections), and figure examples."""
    scores = Scores()
    examples: list[Example] = []
    features: dict[str, list[np.ndarray]] = {}
    wrong = np.roll(split.hint, 1, axis=0)  # each image gets its neighbour's hint
    for start in range(0, len(split), batch_size):
        sl = slice(start, start + batch_size)
        color, lineart, hints = split.color[sl], split.lineart[sl], split.hint[sl]
        outputs, guesses, auto_hints = predict_chunk(
            models, lineart, hints, wrong[sl], reference, device, batch_size
        )
        for method in METHODS:
            scores.add(method, m.image_metrics(outputs[method], color, hints))
        original = {"hint_chi2": m.hint_fidelity(color, hints), "colorfulness": m.colorfulness(color)}
        scores.add("original", original)
        # The hint model's yardstick: the training set's average hint, scored the same way.
        average = hint_scores(np.broadcast_to(reference.mean_hint, hints.shape), hints)
        scores.add(HINT_KIND, hint_scores(guesses, hints) | {f"avg_{k}": v for k, v in average.items()})
        obeyed = {kind: hint_obedience(models[kind], lineart, device, batch_size) for kind in GENERATOR_KINDS}
        scores.add("obedience", obeyed)
        for kind in (k for k in GENERATOR_KINDS if local and takes_local_hints(models[k])):
            net, seeded = models[kind], (start, device, batch_size)  # `start` seeds the simulated dots
            given = {"true": hints, "auto": auto_hints}
            scores.add(f"local_points/{kind}", point_curve(net, lineart, color, given, *seeded))
            scores.add(f"local_obedience/{kind}", local_obedience(net, lineart, hints, *seeded))
        if fid_model is not None:
            for method, images in {"original": color, **outputs}.items():  # outputs: one per METHODS
                features.setdefault(method, []).append(
                    m.inception_features(fid_model, images, device or "cpu")
                )
        wanted = range(start, start + min(figure_examples - len(examples), len(color)))
        examples += [figure_example(models, split, outputs, auto_hints, i, i - start) for i in wanted]
    result = scores.means()
    for name in [key for key in result if "/" in key]:  # "local_points/cgan" -> ["local_points"]["cgan"]
        section, kind = name.split("/")
        result.setdefault(section, {})[kind] = result.pop(name)
    hint = result[HINT_KIND]
    hint["chi2_vs_avg"] = round(hint["chi2"] / max(hint["avg_chi2"], 1e-12), DECIMALS)
    if features:
        real = np.concatenate(features["original"])
        for method in METHODS:
            fid = m.frechet_distance(real, np.concatenate(features[method]))
            result[method]["fid"] = round(fid, DECIMALS)
    return result, examples


def score_model(kind: str, model, split: Split, batch_size: int = 64, device: str | None = None) -> dict:
    """One model's metrics, as its section of evaluation.json (the registry re-scores champions so)."""
    scores = Scores()
    for start in range(0, len(split), batch_size):
        sl = slice(start, start + batch_size)
        lineart, hint = split.lineart[sl], split.hint[sl]
        if SPECS[kind].generator:
            out = colorize(model, lineart, hint, device=device, batch_size=batch_size)
            scores.add(kind, m.image_metrics(out, split.color[sl], hint))
        else:
            scores.add(kind, hint_scores(predict_hint(model, lineart, device=device, raw=True), hint))
    return scores.means()[kind]


def load_split(params: EvaluateParams, inputs: StageInputs) -> Split:
    split = ProcessedStore(inputs.store, inputs.histograms).load(
        params.split, limit=params.max_images or None
    )
    if len(split) == 0:
        raise ValueError(
            f"the {params.split} split is empty: add images or raise lineart.split.{params.split}"
        )
    return split


def run_evaluate(
    params: EvaluateParams,
    inputs: StageInputs,
    device: str | None = None,
    log_run: Callable[[dict, Path, dict], None] | None = None,
) -> dict:
    """Score the models in `inputs.models`, write metrics/evaluation.json and reports/, then `log_run`."""
    device = device or str(pick_device("auto"))  # the GPU when there is one
    split = load_split(params, inputs)
    reference = TrainingReference.of_store(ProcessedStore(inputs.store, inputs.histograms))
    models = load_models(inputs.models, device)
    fid_model, weights = None, params.fid_weights  # the user's local TorchScript Inception; never downloads
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"evaluate.fid_weights: {weights} not found (set it to null to skip FID)")
        fid_model = torch.jit.load(weights, map_location=device).eval()
    log.info("evaluating %d %s images", len(split), params.split)
    scores, examples = evaluate_models(
        models, split, reference, params.batch_size, device, params.figure_examples, fid_model=fid_model
    )
    result = {"split": params.split, "images": len(split), "split_fingerprint": split_fingerprint(split)}
    result |= scores
    atomic_write_text(params.metrics, json.dumps(result, indent=2) + "\n")
    figure = comparison_figure(examples, Path(params.reports) / FIGURE_FILE)
    if log_run is not None:
        runs = {name: read_run(Path(inputs.models) / name) for name in KINDS}  # each one's MLflow run
        log_run(result, figure, {name: run["run_id"] for name, run in runs.items() if run is not None})
    return result


def evaluate_stage(params: Params, inputs: StageInputs, track: bool = True) -> tuple[dict, str | None]:
    """The stage as the CLI, DVC and Prefect run it: the metrics and their MLflow run id (or None)."""
    logged: dict[str, str] = {}
    log_run = None
    if params.tracking.mlflow and track:
        from colorization.tracking.registry import log_evaluation

        def log_run(result, figure, runs):
            logged["run_id"] = log_evaluation(params.tracking.experiment, result, figure, runs)

    return run_evaluate(params.evaluate, inputs, log_run=log_run), logged.get("run_id")
