"""The `colorize` command: colour line art (or a colour image) of any size with a trained generator, at
the model's size; only the colour is scaled back, under the input's own full-size lines (docs/colorize.md)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from colorization.atomic import atomic_write_bytes
from colorization.config import DEFAULT_RECIPE, LineartParams, LineartRecipe
from colorization.hint_layer import HintLayerError, hint_layer
from colorization.histogram import color_histogram
from colorization.images import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    UNSUPPORTED_EXTENSIONS,
    ImageRejected,
    encode_jpeg,
    encode_png,
    read_image_bytes,
    read_rgb,
)
from colorization.lineart import EXTRACTORS, extract_lineart
from colorization.local_hints import fill_regions, layer_to_square
from colorization.models.specs import GENERATOR_KINDS, HINT_KIND, MAIN_KIND, SPECS
from colorization.palette import PALETTE_SUFFIXES, PaletteError, palette_hint, read_palette
from colorization.stamp import bears_stamp, stamp_image
from colorization.textsafe import escaped

log = logging.getLogger(__name__)

DEFAULT_MODEL = f"models:/{SPECS[MAIN_KIND].registered}@champion"  # models:/lineart-cgan@champion
DEFAULT_HINT_MODEL = f"models:/{SPECS[HINT_KIND].registered}@champion"
REGISTRY_SCHEMES = ("models:/", "runs:/")
_PALETTE_ENTRY = re.compile(r"^#?([0-9a-fA-F]{6})(?::(.+))?$")

# Line-art detection: scanned or drawn line art is grey (channels within a few levels of
# each other) and mostly paper; a photo or a coloured illustration fails one of the two.
GREY_SPREAD = 24  # max - min over R, G, B below which a pixel counts as grey
MAX_COLOURED_FRACTION = 0.02
PAPER_LEVEL = 200
MIN_PAPER_FRACTION = 0.5
LINE_LEVEL = 128  # after fitting, darker than this is line (the models saw 0/255 Canny lines)


class ColorizeError(ValueError):
    """A refused request; the message is the one line shown to the user."""


def parse_palette(spec: str) -> np.ndarray:
    """'#rrggbb:weight,...' (weight optional, default 1) -> the 512-bin hint."""
    entries = []
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
        entries.append((tuple(int(hexa[i : i + 2], 16) for i in (0, 2, 4)), weight))
    return palette_hint(entries)


def input_limits(limits: LineartParams | None) -> tuple[int, int]:
    """(max_pixels, max_file_bytes) of the user's lineart section, else the defaults."""
    if limits is None:
        return DEFAULT_MAX_PIXELS, DEFAULT_MAX_FILE_BYTES
    return limits.max_pixels, limits.max_file_bytes


def read_image(path: str | Path, limits: LineartParams | None = None) -> np.ndarray:
    max_pixels, max_file_bytes = input_limits(limits)
    try:
        return read_rgb(path, max_pixels=max_pixels, max_file_bytes=max_file_bytes)
    except FileNotFoundError:
        raise ColorizeError(f"{escaped(path)}: no such file") from None
    except (ImageRejected, OSError) as err:
        raise ColorizeError(f"{escaped(path)}: unreadable image ({err})") from None


def collect_inputs(inputs: list[Path], out: Path, layers: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a folder is mirrored under `out`; `out` with an image suffix is one file."""
    readable = IMAGE_EXTENSIONS + UNSUPPORTED_EXTENSIONS  # the latter are reported, not skipped
    one_file = out.suffix.lower() in readable and not out.is_dir()
    if out.suffix.lower() in UNSUPPORTED_EXTENSIONS and not out.is_dir():
        raise ColorizeError(f"-o {escaped(out)}: cannot write {out.suffix}; use .png, .jpg or .webp")
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        if item.is_dir():
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
    if one_file and not (len(inputs) == 1 and inputs[0].is_file()):
        raise ColorizeError(
            f"{len(found)} input images need an output folder, but -o {escaped(out)} names one image file; "
            "give -o a folder"
        )
    pairs = [(found[0][0], out)] if one_file else [(src, out / rel) for src, rel in found]
    targets = [dst for _, dst in pairs]
    if layers:
        targets += [path for dst in list(targets) for path in layer_paths(dst)]
    if len(set(targets)) != len(targets):
        duplicate = next(t for t in targets if targets.count(t) > 1)
        raise ColorizeError(f"two inputs would both be written to {duplicate}; colour them separately")
    if foreign := [t for t in targets if os.path.lexists(t) and not bears_stamp(t)]:
        raise ColorizeError(
            f"-o {escaped(out)}: {len(foreign)} existing file(s) there were not written by colorize "
            f"(first: {escaped(foreign[0])}); nothing was written - choose another -o or move them"
        )
    return pairs


def is_lineart(rgb: np.ndarray) -> bool:
    """Near-grey and mostly paper: already line art."""
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


def fit_input(rgb: np.ndarray, size: int, recipe: LineartRecipe) -> Fitted:
    """Line art [size, size] of an image of any size, padded with paper to keep its aspect ratio."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interp = cv2.INTER_AREA if new_h < height else cv2.INTER_CUBIC
    if is_lineart(rgb):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        factor = max(1, int(height / new_h))
        if factor > 1:
            # Thicken lines to about one output pixel first, or area averaging fades them to paper.
            gray = cv2.erode(gray, np.ones((factor, factor), np.uint8))
        lines = np.where(cv2.resize(gray, (new_w, new_h), interpolation=interp) < LINE_LEVEL, 0, 255)
    else:
        # Same order as the training data: resize the colour image, then extract its lines.
        lines = extract_lineart(cv2.resize(rgb, (new_w, new_h), interpolation=interp), recipe)
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


@dataclass
class Layers:
    """One coloured picture at the input's size, as an artist would stack it."""

    colour: np.ndarray  # uint8 [H, W, 3]: the model's colour, scaled up; its own lines painted out
    lines: np.ndarray  # uint8 [H, W, 4]: the input's lines, opaque; paper transparent
    composite: np.ndarray  # uint8 [H, W, 3]: the line layer over the colour layer


def line_layer(rgb: np.ndarray, recipe: LineartRecipe) -> np.ndarray:
    """The input's lines at full size as RGBA. Line art keeps its pixels (lighter ones fade out so that
    over white they give the input back); a colour picture gets the extractor's lines, black."""
    height, width = rgb.shape[:2]
    layer = np.empty((height, width, 4), np.uint8)
    if is_lineart(rgb):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        layer[..., :3] = np.where((gray <= LINE_LEVEL)[..., None], rgb, np.uint8(LINE_LEVEL))
        layer[..., 3] = np.minimum((255 - gray).astype(np.uint16) * 255 // (255 - LINE_LEVEL), 255)
    else:
        layer[..., :3] = 0
        layer[..., 3] = 255 - extract_lineart(rgb, recipe)
    return layer


def over(top: np.ndarray, bottom: np.ndarray, rows: int = 512) -> np.ndarray:
    """RGBA `top` over opaque RGB `bottom` (straight alpha), in strips: small 16-bit intermediates."""
    out = np.empty(bottom.shape, np.uint8)
    for start in range(0, len(out), rows):
        strip = slice(start, start + rows)
        alpha = top[strip, :, 3:4].astype(np.uint16)
        mixed = top[strip, :, :3] * alpha + bottom[strip].astype(np.uint16) * (255 - alpha) + 127
        out[strip] = mixed // 255
    return out


def paint_out_lines(colored: np.ndarray, lineart: np.ndarray) -> np.ndarray:
    """The model's output with the pixels under its input lines inpainted: scaled up, its own dark
    strokes would show as blurred halos around the sharp full-size lines."""
    mask = cv2.dilate((lineart < LINE_LEVEL).astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
    if not mask.any():
        return colored
    return cv2.inpaint(np.ascontiguousarray(colored), mask, 3, cv2.INPAINT_TELEA)


@dataclass
class LoadedModel:
    module: object  # torch nn.Module in eval mode
    kind: str  # cnn | cgan | hint
    image_size: int
    source: str  # what the user asked for, for messages
    recipe: LineartRecipe = DEFAULT_RECIPE  # the line art it was trained on: what colour inputs become


def load_model(
    spec: str, device: str, kinds: tuple[str, ...], fallback: LineartRecipe | None = None
) -> LoadedModel:
    """A registry URI (models:/name@alias, runs:/...) or a models/<name> folder; `fallback`: its recipe
    if its config records none."""
    from colorization import models

    try:
        if spec.startswith(REGISTRY_SCHEMES):
            from colorization.tracking import RegistryError
            from colorization.tracking.model_cache import load_registered

            try:
                module, config = load_registered(spec, device)
            except RegistryError as err:
                raise ColorizeError(str(err)) from None
        else:
            folder = Path(spec)
            if not (folder / models.WEIGHTS_FILE).is_file() or not (folder / models.CONFIG_FILE).is_file():
                raise ColorizeError(
                    f"model not found: {spec} (expected models:/<name>@<alias> or a folder with "
                    f"{models.WEIGHTS_FILE} and {models.CONFIG_FILE})"
                )
            config = models.read_config(folder)
            module = models.load_trained(folder, device=device)
    except models.ModelFormatError as err:
        raise ColorizeError(str(err)) from None
    if config["kind"] not in kinds:
        raise ColorizeError(f"{spec} is a {config['kind']} model; expected {' or '.join(kinds)}")
    try:
        recipe = models.model_recipe(config, spec)
    except ValueError as err:
        raise ColorizeError(str(err)) from None
    if recipe is None:
        recipe = fallback or DEFAULT_RECIPE
        where = "the params file's" if fallback else "the built-in"
        log.warning(
            "%s records no line-art recipe (an older model): using %s %s lines", spec, where, recipe.extractor
        )
    return LoadedModel(module, config["kind"], int(config["image_size"]), spec, recipe)


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
    """JPEG for .jpg / .jpeg, WebP for .webp, else PNG."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return encode_jpeg(rgb, quality=95)
    if suffix == ".webp":
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 95])
        if not ok:
            raise RuntimeError("WebP encoding failed")
        return buf.tobytes()
    return encode_png(rgb)


def layer_paths(dst: Path) -> tuple[Path, Path]:
    """Where --layers writes the colour and line layers of the composite `dst`."""
    return dst.with_name(f"{dst.stem}.colour.png"), dst.with_name(f"{dst.stem}.lines.png")


def hints_for(hints: HintSource, lineart: np.ndarray, device: str, batch_size: int = 256) -> np.ndarray:
    """float32 [N, 512]: the fixed hint, or the hint model's prediction (at its own size)."""
    from colorization.inference import predict_hint

    if hints.fixed is not None:
        return np.repeat(hints.fixed[None], len(lineart), axis=0)
    model = hints.model
    if model.image_size != lineart.shape[1]:
        dsize = (model.image_size, model.image_size)
        lineart = np.stack([cv2.resize(x, dsize, interpolation=cv2.INTER_AREA) for x in lineart])
    return predict_hint(model.module, lineart, device=device, batch_size=batch_size)


def colorize_images(
    images: list[np.ndarray],
    generator: LoadedModel,
    hints: HintSource,
    device: str,
    batch_size: int = 16,
    hint_layers: list[np.ndarray | None] | None = None,
) -> tuple[list[Layers], np.ndarray]:
    """The one inference path (CLI and studio): RGB inputs -> their layers, and the hints used.
    `hint_layers`: per input, None or its local hints as an RGBA layer of its size (hint_layer.py)."""
    from colorization.inference import colorize

    recipe, size = generator.recipe, generator.image_size
    fitted = [fit_input(rgb, size, recipe) for rgb in images]
    lineart = np.stack([f.lineart for f in fitted])
    hint = hints_for(hints, lineart, device)
    layers_in = hint_layers or [None] * len(images)
    dotted = [i for i, layer in enumerate(layers_in) if layer is not None]
    empty = np.zeros((4, size, size), np.float32)
    squares = [
        empty if layer is None else layer_to_square(layer, f.box, size)
        for layer, f in zip(layers_in, fitted, strict=True)
    ]
    local = np.stack(squares) if dotted else None
    try:
        colored = colorize(generator.module, lineart, hint, device=device, batch_size=batch_size, local=local)
    except ValueError as err:  # local hints for a model trained without them
        raise ColorizeError(f"{generator.source}: {err}") from None
    # The dotted pictures without their dots: what the regions no dot is in keep (fill_regions).
    unhinted = {}
    if dotted:
        plain = colorize(generator.module, lineart[dotted], hint[dotted], device, batch_size=batch_size)
        unhinted = dict(zip(dotted, plain, strict=True))
    layers = []  # each input's full-size layers (with local hints: `fill_regions`)
    for i, (rgb, c, f, layer) in enumerate(zip(images, colored, fitted, layers_in, strict=True)):
        colour = restore_size(paint_out_lines(c, f.lineart), f)
        lines = line_layer(rgb, recipe)
        if layer is not None:
            u = restore_size(paint_out_lines(unhinted[i], f.lineart), f)
            colour = fill_regions(colour, lines[..., 3] >= 128, layer, unhinted=u)
        layers.append(Layers(colour, lines, over(lines, colour)))
    return layers, hint


def colorize_files(
    pairs: list[tuple[Path, Path]],
    generator: LoadedModel,
    hints: HintSource,
    limits: LineartParams | None,
    device: str,
    batch_size: int = 16,
    layers: bool = False,
    hint_layer: np.ndarray | None = None,
) -> ColorizeResult:
    """Colour every (input, output) pair, `batch_size` at a time (few full-size pictures in memory); an
    input that cannot be read is reported, the rest coloured. `hint_layer`: the one input's hints."""
    failed: list[str] = []
    written: list[Path] = []
    for start in range(0, len(pairs), batch_size):
        images, kept = [], []
        for src, dst in pairs[start : start + batch_size]:
            try:
                images.append(read_image(src, limits))
                kept.append((src, dst))
            except ColorizeError as err:
                failed.append(str(err))
        if not kept:
            continue
        try:
            given = None if hint_layer is None else [hint_layer]
            results = colorize_images(images, generator, hints, device, batch_size, given)[0]
        except cv2.error:  # one picture OpenCV cannot process: find it, colour the others
            results = []
            for (src, _), image in zip(kept, images, strict=True):
                try:
                    results += colorize_images([image], generator, hints, device, hint_layers=given)[0]
                except cv2.error as err:
                    failed.append(f"{escaped(src)}: cannot be processed ({' '.join(str(err).split())[:200]})")
                    results.append(None)
        del images
        for (_, dst), result in zip(kept, results, strict=True):
            if result is None:
                continue
            files = [(dst, encode_for(dst, result.composite))]
            if layers:
                colour_path, lines_path = layer_paths(dst)
                files += [(colour_path, encode_png(result.colour)), (lines_path, encode_png(result.lines))]
            try:
                for path, data in files:
                    atomic_write_bytes(path, stamp_image(data))  # the stamp lets a re-run replace it
            except OSError as err:
                failed.append(f"{escaped(path)}: cannot be written ({err.strerror or err})")
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
        return color_histogram(read_image(reference, limits))
    if palette is None:
        return None
    if not palette.strip().lower().endswith(PALETTE_SUFFIXES):  # colours, not a palette file
        return parse_palette(palette)
    try:
        return palette_hint(read_palette(palette.strip()))
    except PaletteError as err:
        raise ColorizeError(str(err)) from None


def run_colorize(
    inputs: list[Path],
    out: Path,
    lineart_params: LineartParams | None,
    model: str = DEFAULT_MODEL,
    reference: Path | None = None,
    palette: str | None = None,
    hint_model: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    layers: bool = False,
    extractor: str | None = None,
    hints_file: Path | None = None,
) -> ColorizeResult:
    """Everything the CLI does after parsing: validate, load, colour, write."""
    from colorization.device import pick_device
    from colorization.inference import takes_local_hints

    if extractor is not None and extractor not in EXTRACTORS:
        raise ColorizeError(f"--lineart must be one of {', '.join(EXTRACTORS)}, got {escaped(extractor)!r}")
    pairs = collect_inputs(inputs, out, layers)
    torch_device = str(pick_device(device))
    fixed = given_hint(reference, palette, lineart_params)  # a bad palette fails before any model loads
    local = read_hints(hints_file, pairs, lineart_params)  # a bad hint layer fails before any model loads
    fallback = lineart_params.recipe() if lineart_params is not None else None
    generator = load_model(model, torch_device, GENERATOR_KINDS, fallback)
    if extractor is not None:
        generator = replace(generator, recipe=generator.recipe.model_copy(update={"extractor": extractor}))
    if local is not None and not takes_local_hints(generator.module):
        raise ColorizeError(
            f"{generator.source} was trained without local hints: leave out --hints, or use a model "
            f"trained with train.{generator.kind}.local_hints: true"
        )
    hints = HintSource(fixed=fixed)
    if fixed is None:
        hints.model = load_model(hint_model or DEFAULT_HINT_MODEL, torch_device, (HINT_KIND,))
    return colorize_files(pairs, generator, hints, lineart_params, torch_device, batch_size, layers, local)


def read_hints(
    path: Path | None, pairs: list[tuple[Path, Path]], limits: LineartParams | None
) -> np.ndarray | None:
    """--hints: the RGBA hint layer for the one input picture, checked against its size."""
    if path is None:
        return None
    if len(pairs) != 1:
        raise ColorizeError(
            f"--hints gives one picture's hints, but there are {len(pairs)} inputs: colour it alone"
        )
    height, width = read_image(pairs[0][0], limits).shape[:2]
    max_pixels, max_file_bytes = input_limits(limits)
    try:
        data = read_image_bytes(path, max_file_bytes)
        return hint_layer(data, path.name, height, width, max_pixels)
    except FileNotFoundError:
        raise ColorizeError(f"--hints {escaped(path)}: no such file") from None
    except (HintLayerError, ImageRejected, OSError) as err:
        raise ColorizeError(f"--hints {escaped(path)}: {err}") from None
