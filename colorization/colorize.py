"""The `colorize` command: colour any line art (or colour image) with a trained generator.

Inputs of any size are fitted into the model's square (longer side scaled to the model's
image size, white paper around it), coloured, and the result is cut out and scaled back
to the input's size. A colour input is turned into line art first with the same
extractor the training data went through. The hint comes from a reference image, a
palette string, or the hint model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from colorization.atomic import atomic_write_bytes
from colorization.config import LineartParams
from colorization.histogram import BINS_PER_CHANNEL, HIST_BINS, color_histogram
from colorization.images import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    UNSUPPORTED_EXTENSIONS,
    ImageRejected,
    encode_jpeg,
    encode_png,
    read_rgb,
)
from colorization.lineart import extract_lineart
from colorization.textsafe import escaped

log = logging.getLogger(__name__)

DEFAULT_MODEL = "models:/lineart-cgan@champion"
DEFAULT_HINT_MODEL = "models:/lineart-hint@champion"
REGISTRY_SCHEMES = ("models:/", "runs:/")
GENERATOR_KINDS = ("cnn", "cgan", "generator")  # "generator": known only by its signature

# Line-art detection: scanned or drawn line art is grey (channels within a few levels of
# each other) and mostly paper; a photo or a coloured illustration fails one of the two.
GREY_SPREAD = 24  # max - min over R, G, B below which a pixel counts as grey
MAX_COLOURED_FRACTION = 0.02
PAPER_LEVEL = 200
MIN_PAPER_FRACTION = 0.5
LINE_LEVEL = 128  # after fitting, darker than this is line (the models saw 0/255 Canny lines)


class ColorizeError(ValueError):
    """A refused request; the message is the one line shown to the user."""


# The demo profile's `lineart` section (params.yaml), for `colorize` run where no params file
# is: it needs only the extractor and the limits. A model trained on line art made with other
# settings wants `--params` naming its params file.
DEFAULT_LINEART = {
    "raw": "data/raw",
    "out": "data/processed/lineart",
    "image_size": 64,
    "resize": "center_crop",
    "extractor": "canny",
    "canny": {"low": 100, "high": 200, "blur": 3},
    "xdog": {"sigma": 0.8, "k": 1.6, "tau": 0.98, "epsilon": 0.0, "phi": 200.0},
    "dilate": 0,
    "shard_size": 256,
    "workers": 0,
    "max_pixels": DEFAULT_MAX_PIXELS,
    "max_file_bytes": DEFAULT_MAX_FILE_BYTES,
    "split": {"val": 0.1, "test": 0.1},
}


def default_lineart_params() -> LineartParams:
    return LineartParams.model_validate(DEFAULT_LINEART)


# ---------------------------------------------------------------- hints


_PALETTE_ENTRY = re.compile(r"^#?([0-9a-fA-F]{6})(?::(.+))?$")


def parse_palette(spec: str) -> np.ndarray:
    """'#rrggbb:weight,...' (weight optional, default 1) -> the 512-bin hint, float32, sums to 1."""
    colours, weights = [], []
    for entry in (e.strip() for e in spec.split(",")):
        match = _PALETTE_ENTRY.match(entry)
        if not match:
            raise ColorizeError(f"palette entry {entry!r} is not #rrggbb or #rrggbb:weight")
        hexa, weight_text = match.groups()
        try:
            weight = float(weight_text) if weight_text is not None else 1.0
        except ValueError:
            raise ColorizeError(f"palette entry {entry!r}: weight {weight_text!r} is not a number") from None
        if not np.isfinite(weight) or weight <= 0:
            raise ColorizeError(f"palette entry {entry!r}: weight must be a positive number")
        colours.append([int(hexa[i : i + 2], 16) for i in (0, 2, 4)])
        weights.append(weight)
    rgb = np.array(colours, np.int64)
    shift = 8 - int(np.log2(BINS_PER_CHANNEL))
    q = rgb >> shift
    bins = q[:, 0] * BINS_PER_CHANNEL**2 + q[:, 1] * BINS_PER_CHANNEL + q[:, 2]
    hint = np.bincount(bins, weights=weights, minlength=HIST_BINS)
    return (hint / hint.sum()).astype(np.float32)


def reference_hint(path: str | Path, limits: LineartParams | None = None) -> np.ndarray:
    """The hint of a colour reference image: its 512-bin histogram, as in training."""
    return color_histogram(read_image(path, limits))


# ---------------------------------------------------------------- inputs


def read_image(path: str | Path, limits: LineartParams | None = None) -> np.ndarray:
    """An input image within `limits` (lineart.max_pixels / max_file_bytes; else the defaults)."""
    max_pixels = limits.max_pixels if limits is not None else DEFAULT_MAX_PIXELS
    max_file_bytes = limits.max_file_bytes if limits is not None else DEFAULT_MAX_FILE_BYTES
    try:
        return read_rgb(path, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
    except FileNotFoundError:
        raise ColorizeError(f"{escaped(path)}: no such file") from None
    except (ImageRejected, OSError) as err:
        raise ColorizeError(f"{escaped(path)}: unreadable image ({err})") from None


def names_a_file(out: Path) -> bool:
    """-o y.png (or .jpg, .webp; or .gif, refused later) names one output image, unless a folder."""
    return out.suffix.lower() in IMAGE_EXTENSIONS + UNSUPPORTED_EXTENSIONS and not out.is_dir()


def collect_inputs(inputs: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """(input image, output image) pairs. A folder is searched recursively and mirrored under OUT.

    OUT is a file for a single image input and an image suffix (the format follows the
    suffix: PNG, JPEG or WebP); otherwise a folder of PNGs. Several inputs with an image
    file name as OUT are refused: there would be nowhere to put the others.
    """
    if out.suffix.lower() in UNSUPPORTED_EXTENSIONS and not out.is_dir():
        raise ColorizeError(f"-o {escaped(out)}: cannot write {out.suffix}; use .png, .jpg or .webp")
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
            readable = IMAGE_EXTENSIONS + UNSUPPORTED_EXTENSIONS  # the latter are reported, not skipped
            images = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in readable)
            if not images:
                raise ColorizeError(
                    f"{escaped(item)}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder"
                )
            found += [(p, p.relative_to(item).with_suffix(".png")) for p in images]
        elif item.is_file():
            found.append((item, Path(item.name).with_suffix(".png")))
        else:
            raise ColorizeError(f"{escaped(item)}: no such file or folder")
    if names_a_file(out):
        if len(inputs) == 1 and inputs[0].is_file():
            return [(found[0][0], out)]
        raise ColorizeError(
            f"{len(found)} input images need an output folder, but -o {escaped(out)} names one image file; "
            "give -o a folder"
        )
    pairs = [(src, out / rel) for src, rel in found]
    targets = [dst for _, dst in pairs]
    if len(set(targets)) != len(targets):
        duplicate = next(t for t in targets if targets.count(t) > 1)
        raise ColorizeError(f"two inputs would both be written to {duplicate}; colour them separately")
    return pairs


def is_lineart(rgb: np.ndarray) -> bool:
    """Near-grey and mostly paper: already line art, no edge extraction needed."""
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    coloured = np.mean(spread > GREY_SPREAD)
    paper = np.mean(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) > PAPER_LEVEL)
    return bool(coloured <= MAX_COLOURED_FRACTION and paper >= MIN_PAPER_FRACTION)


@dataclass
class Fitted:
    """An input made model-sized: the line art and where the picture sits in the square."""

    lineart: np.ndarray  # uint8 [S, S], 0 = line
    box: tuple[int, int, int, int]  # top, left, height, width of the picture inside the square
    size: tuple[int, int]  # the input's height, width


def _scaled_size(height: int, width: int, size: int) -> tuple[int, int]:
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_input(rgb: np.ndarray, size: int, params: LineartParams) -> Fitted:
    """Line art [size, size] of an image of any size, padded with paper to keep its aspect ratio."""
    height, width = rgb.shape[:2]
    new_h, new_w = _scaled_size(height, width, size)
    shrink = new_h < height
    if is_lineart(rgb):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        factor = max(1, int(height / new_h))
        if factor > 1:
            # Thicken lines to about one output pixel first, or area averaging fades them to paper.
            gray = cv2.erode(gray, np.ones((factor, factor), np.uint8))
        small = cv2.resize(gray, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        lines = np.where(small < LINE_LEVEL, 0, 255).astype(np.uint8)
    else:
        # Same order as the training data: resize the colour image, then extract its lines.
        small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        lines = extract_lineart(small, params)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    square = np.full((size, size), 255, np.uint8)
    square[top : top + new_h, left : left + new_w] = lines
    return Fitted(square, (top, left, new_h, new_w), (height, width))


def restore_size(colored: np.ndarray, fitted: Fitted) -> np.ndarray:
    """Cut the picture out of the model-sized output and scale it back to the input's size."""
    top, left, h, w = fitted.box
    height, width = fitted.size
    crop = np.ascontiguousarray(colored[top : top + h, left : left + w])
    interp = cv2.INTER_CUBIC if height > h else cv2.INTER_AREA
    return cv2.resize(crop, (width, height), interpolation=interp)


# ---------------------------------------------------------------- models


@dataclass
class LoadedModel:
    module: object  # torch nn.Module in eval mode
    kind: str  # cnn | cgan | hint
    image_size: int
    source: str  # what the user asked for, for messages


def is_registry_uri(spec: str) -> bool:
    return spec.startswith(REGISTRY_SCHEMES)


def load_model(spec: str, device: str, kinds: tuple[str, ...]) -> LoadedModel:
    """A registry URI (models:/name@alias, models:/name/3, runs:/...) or a local models/<name> folder."""
    if is_registry_uri(spec):
        from colorization.tracking.registry import RegistryError, load_registered

        try:
            module, config = load_registered(spec, device)
        except RegistryError as err:
            raise ColorizeError(str(err)) from None
    else:
        from colorization.models import CONFIG_FILE, WEIGHTS_FILE, load_trained, read_config

        folder = Path(spec)
        if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
            raise ColorizeError(
                f"model not found: {spec} (expected models:/<name>@<alias> or a folder with "
                f"{WEIGHTS_FILE} and {CONFIG_FILE})"
            )
        config = read_config(folder)
        module = load_trained(folder, device=device)
    if config["kind"] not in kinds:
        raise ColorizeError(f"{spec} is a {config['kind']} model; expected {' or '.join(kinds)}")
    return LoadedModel(module, config["kind"], int(config["image_size"]), spec)


# ---------------------------------------------------------------- the command


@dataclass
class HintSource:
    """Exactly one of: a fixed hint for every image, or a hint model."""

    fixed: np.ndarray | None = None
    model: LoadedModel | None = None


@dataclass
class ColorizeResult:
    written: list[Path]
    failed: list[str]  # one line per input that could not be coloured, naming it


def encode_for(path: Path, rgb: np.ndarray) -> bytes:
    """The image in the format its file name says: JPEG for .jpg / .jpeg, WebP for .webp, else PNG."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return encode_jpeg(rgb, quality=95)
    if suffix == ".webp":
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 95])
        if not ok:
            raise RuntimeError("WebP encoding failed")
        return buf.tobytes()
    return encode_png(rgb)


def colorize_files(
    pairs: list[tuple[Path, Path]],
    generator: LoadedModel,
    hints: HintSource,
    lineart_params: LineartParams,
    device: str,
    batch_size: int = 16,
) -> ColorizeResult:
    """Colour every (input, output) pair; an input that cannot be read is reported, the rest coloured.

    Every input is read and fitted before anything is written; only the small model-sized
    line art is kept meanwhile.
    """
    from colorization.inference import colorize, predict_hint

    size = generator.image_size
    failed: list[str] = []
    fitted: list[Fitted] = []
    kept: list[tuple[Path, Path]] = []
    for src, dst in pairs:
        try:
            fitted.append(fit_input(read_image(src, lineart_params), size, lineart_params))
            kept.append((src, dst))
        except ColorizeError as err:
            failed.append(str(err))
        except cv2.error as err:
            failed.append(f"{escaped(src)}: cannot be processed ({' '.join(str(err).split())[:200]})")
    if not kept:
        return ColorizeResult([], failed)
    pairs = kept
    lineart = np.stack([f.lineart for f in fitted])
    if hints.fixed is not None:
        hint = np.repeat(hints.fixed[None], len(pairs), axis=0)
    else:
        model = hints.model
        at_hint_size = lineart
        if model.image_size != size:  # the hint net sees line art at its own training size
            dsize = (model.image_size, model.image_size)
            at_hint_size = np.stack([cv2.resize(x, dsize, interpolation=cv2.INTER_AREA) for x in lineart])
        hint = predict_hint(model.module, at_hint_size, device=device)
    colored = colorize(generator.module, lineart, hint, device=device, batch_size=batch_size)
    written = []
    for (_, dst), image, fit in zip(pairs, colored, fitted, strict=True):
        try:
            atomic_write_bytes(dst, encode_for(dst, restore_size(image, fit)))
        except OSError as err:
            failed.append(f"{escaped(dst)}: cannot be written ({err.strerror or err})")
            continue
        written.append(dst)
        log.info("wrote %s", escaped(dst))
    return ColorizeResult(written, failed)


def given_hint(
    reference: Path | None, palette: str | None, limits: LineartParams | None = None
) -> np.ndarray | None:
    """The user's hint from --reference or --palette; None means: predict it."""
    if reference is not None and palette is not None:
        raise ColorizeError("give --reference or --palette, not both")
    if reference is not None:
        return reference_hint(reference, limits)
    if palette is not None:
        return parse_palette(palette)
    return None


def run_colorize(
    inputs: list[Path],
    out: Path,
    lineart_params: LineartParams,
    model: str = DEFAULT_MODEL,
    reference: Path | None = None,
    palette: str | None = None,
    hint_model: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
) -> ColorizeResult:
    """Everything the CLI does after parsing: validate, load, colour, write."""
    from colorization.device import pick_device

    pairs = collect_inputs(inputs, out)
    torch_device = str(pick_device(device))
    fixed = given_hint(reference, palette, lineart_params)  # a bad palette fails before any model loads
    generator = load_model(model, torch_device, GENERATOR_KINDS)
    if fixed is not None:
        hints = HintSource(fixed=fixed)
    else:
        hints = HintSource(model=load_model(hint_model or DEFAULT_HINT_MODEL, torch_device, ("hint",)))
    return colorize_files(pairs, generator, hints, lineart_params, torch_device, batch_size)
