"""Palettes as files (GIMP `.gpl`, `.json`; docs/colorize.md), so a character's colours can be kept and
reused: (colour, weight) entries; a GPL colour's name that is a number, or `weight N`, is its weight."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from colorization.histogram import HIST_BINS, colour_bins, heaviest_bins, weighted_hint
from colorization.textsafe import escaped

PALETTE_SUFFIXES = (".gpl", ".json")
MAX_PALETTE_BYTES = 1_000_000  # a palette is a few lines; anything bigger is not one
MAX_COLOURS = 4096
_NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_WEIGHT_NAME = re.compile(rf"^(?:weight\s*[:=]?\s*)?({_NUMBER})$", re.IGNORECASE)

Colour = tuple[int, int, int]


class PaletteError(ValueError):
    """A palette that cannot be read or written; the message is one line."""


def hex_colour(rgb: Colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def palette_hint(entries: list[tuple[Colour, float]]) -> np.ndarray:
    """The 512-bin hint of (colour, weight) entries: float32, sums to 1."""
    if not entries:
        raise PaletteError("the palette has no colours")
    return weighted_hint(np.array([c for c, _ in entries], np.int64), np.array([w for _, w in entries]))


def _weight(text: str | float, where: str) -> float:
    try:  # a number: the callers checked (a GPL name by its pattern, a JSON value by type)
        weight = float(text)
    except OverflowError:  # a JSON integer beyond a float's range
        weight = math.inf
    if not math.isfinite(weight) or weight <= 0:  # (a huge integer shown cut, as other values are)
        raise PaletteError(f"{where}: weight must be a positive number, got {repr(text)[:40]}")
    return weight


def parse_gpl(text: str, name: str = "palette") -> list[tuple[Colour, float]]:
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "GIMP Palette":
        raise PaletteError(f"{name}: not a GIMP palette (its first line must be 'GIMP Palette')")
    entries = []
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or line.startswith("#") or re.match(r"^(Name|Columns)\s*:", line):
            continue
        fields = line.split(None, 3)
        where = f"{name} line {number}"
        try:
            rgb = tuple(int(v) for v in fields[:3])
        except ValueError:
            raise PaletteError(f"{where}: expected 'R G B name', got {escaped(line[:60])!r}") from None
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise PaletteError(f"{where}: R G B must be three numbers 0..255, got {escaped(line[:60])!r}")
        match = _WEIGHT_NAME.match(fields[3].strip() if len(fields) > 3 else "")
        entries.append((rgb, _weight(match.group(1), where) if match else 1.0))
    if not entries:
        raise PaletteError(f"{name}: the palette has no colours")
    return entries


def parse_json(text: str, name: str = "palette") -> list[tuple[Colour, float]]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise PaletteError(f"{name}: not JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(body, dict) or not body:
        raise PaletteError(
            f'{name}: expected a JSON object {{"#rrggbb": weight, ...}} with at least one colour'
        )
    entries = []
    for key, value in body.items():
        if not isinstance(key, str) or not re.fullmatch(r"#?[0-9a-fA-F]{6}", key):
            raise PaletteError(f"{name}: key {escaped(str(key)[:40])!r} is not #rrggbb")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PaletteError(f"{name}: {key}: weight {escaped(str(value)[:40])!r} is not a number")
        entries.append((tuple(bytes.fromhex(key.lstrip("#"))), _weight(value, f"{name}: {key}")))
    return entries


def parse_palette_bytes(data: bytes, suffix: str, name: str = "palette") -> list[tuple[Colour, float]]:
    """A palette file's content (from disk or an upload), by its suffix."""
    suffix = suffix.lower()
    if suffix not in PALETTE_SUFFIXES:
        raise PaletteError(f"{name}: a palette file is .gpl or .json, not {escaped(suffix) or 'no suffix'}")
    if len(data) > MAX_PALETTE_BYTES:
        raise PaletteError(f"{name}: {len(data)} bytes is too large for a palette")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PaletteError(f"{name}: not UTF-8 text") from None
    entries = parse_gpl(text, name) if suffix == ".gpl" else parse_json(text, name)
    if len(entries) > MAX_COLOURS:
        raise PaletteError(f"{name}: {len(entries)} colours; at most {MAX_COLOURS}")
    return entries


def read_palette(path: str | Path) -> list[tuple[Colour, float]]:
    path = Path(path)
    name = escaped(path)
    if path.suffix.lower() not in PALETTE_SUFFIXES:
        raise PaletteError(f"{name}: a palette file is .gpl or .json")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PALETTE_BYTES + 1)
    except FileNotFoundError:
        raise PaletteError(f"{name}: no such palette file") from None
    except OSError as err:
        raise PaletteError(f"{name}: cannot be read ({err.strerror or err})") from None
    return parse_palette_bytes(data, path.suffix, name)


def image_palette(rgb: np.ndarray, max_colours: int = 16) -> list[tuple[Colour, float]]:
    """The image's heaviest histogram bins, heaviest first: (mean colour of the bin's pixels, share)."""
    pixels = rgb.reshape(-1, 3)
    bins = colour_bins(pixels)
    counts = np.bincount(bins, minlength=HIST_BINS)
    sums = np.stack([np.bincount(bins, weights=pixels[:, c], minlength=HIST_BINS) for c in range(3)], axis=1)
    total = counts.sum()
    order = heaviest_bins(counts / total, max_colours)
    return [(tuple(int(v) for v in np.round(sums[b] / counts[b])), counts[b] / total) for b in order]


def format_palette(entries: list[tuple[Colour, float]], suffix: str, name: str = "palette") -> str:
    if suffix.lower() == ".json":
        return json.dumps({hex_colour(c): float(f"{w:.6g}") for c, w in entries}, indent=2) + "\n"
    if suffix.lower() == ".gpl":
        note = "# written by `colorization palette`: each colour's name is its weight"
        head = ["GIMP Palette", f"Name: {' '.join(name.split())}", "Columns: 0", note]
        rows = [f"{r:3d} {g:3d} {b:3d}\tweight {float(w):.6g}" for (r, g, b), w in entries]
        return "\n".join(head + rows) + "\n"
    raise PaletteError(f"a palette file is .gpl or .json, not {escaped(suffix) or 'no suffix'}")
