"""Where a dot's colour goes at full size: obeyed inside its region, nothing across a closed line.

On synthetic drawings (closed shapes, `colorization.sources.synthetic`) at 512 px: the full-size
line layer's regions (as `fill_regions` sees them) between 0.5 % and 25 % of the picture are
the shapes; each drawing gets one dot of a random colour deep inside one shape, and is coloured
with its own histogram as the global hint, with and without the dot (`colorize_images`).

- **in the region**: the distance (0-255, mean over R, G, B) between the dot's colour and the
  region's mean colour, and the share of the region's pixels within 30 levels of the dot;
- **leak**: outside the dot's region (line pixels excluded), the mean change against the
  dot-free colouring, and the share of pixels moved by more than 30 levels.

`--previous` also measures the earlier rules: the fill before it closed one-pixel gaps in the lines
(regions 4-connected as drawn), and regions without a dot keeping the dotted colouring (the model's
own spread of the dot stays wherever its region fill does not reach).

    python bench/dots.py --model models/cgan --images 40
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import cv2
import numpy as np

import colorization.colorize as colorize_module
from colorization import local_hints
from colorization.colorize import GENERATOR_KINDS, HintSource, colorize_images, load_model
from colorization.histogram import color_histogram
from colorization.local_hints import closed_regions, fill_regions
from colorization.sources.synthetic import render

NEAR = 30


def dotted_drawing(size: int, rng: np.random.Generator, lines: np.ndarray):
    """(region mask, RGBA dot layer, dot colour) for one shape of the drawing, or None."""
    count, labels = closed_regions(lines)
    sizes = np.bincount(labels.ravel(), minlength=count)
    shapes = [k for k in range(1, count) if 0.005 * lines.size <= sizes[k] <= 0.25 * lines.size]
    if not shapes:
        return None
    region = labels == shapes[rng.integers(len(shapes))]
    depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(np.argmax(depth), depth.shape)  # the point deepest inside the shape
    colour = rng.integers(0, 256, 3)
    layer = np.zeros((size, size, 4), np.uint8)
    cv2.circle(layer, (int(x), int(y)), 6, (*map(int, colour), 255), -1)
    return region, layer, colour


@contextlib.contextmanager
def previous_rule() -> Iterator[None]:
    """colorize_images as it was: regions without a dot keep the dotted colouring."""
    colorize_module.fill_regions = lambda c, lines, hints, unhinted=None: fill_regions(c, lines, hints)
    try:
        yield
    finally:
        colorize_module.fill_regions = fill_regions


@contextlib.contextmanager
def gaps_open() -> Iterator[None]:
    """fill_regions before it closed small gaps in the lines: regions as 4-connected as drawn."""
    saved, local_hints.GAP_PX_PER = local_hints.GAP_PX_PER, float("inf")
    try:
        yield
    finally:
        local_hints.GAP_PX_PER = saved


def measure(model, images: int, size: int, seed: int, rule=contextlib.nullcontext) -> dict[str, float]:
    """The dot's region is one the fill sees (gaps closed) in every rule; `rule` changes the colouring."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(images):
        rgb = render(index, seed, size).rgb
        hint = HintSource(fixed=color_histogram(rgb))
        (plain,), _ = colorize_images([rgb], model, hint, "cpu")
        found = dotted_drawing(size, rng, plain.lines[..., 3] >= 128)
        if found is None:
            continue
        region, layer, colour = found
        with rule():
            (dotted,), _ = colorize_images([rgb], model, hint, "cpu", hint_layers=[layer])
        out = dotted.colour.astype(np.float64)
        inside = np.abs(out[region] - colour).mean(axis=1)
        outside = ~region & (plain.lines[..., 3] < 128)
        moved = np.abs(out[outside] - plain.colour[outside].astype(np.float64)).mean(axis=1)
        region_mean = np.abs(out[region].mean(axis=0) - colour).mean()
        rows.append((region_mean, (inside <= NEAR).mean(), moved.mean(), (moved > NEAR).mean()))
    table = np.array(rows)
    names = ("region mean vs dot", "region within 30", "outside mean change", "outside moved > 30")
    return {"drawings": len(rows)} | dict(zip(names, table.mean(axis=0), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/cgan", help="a models/<kind> folder or models:/ URI")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--previous", action="store_true", help="also measure the previous rules")
    args = parser.parse_args()
    model = load_model(args.model, "cpu", GENERATOR_KINDS)
    now = measure(model, args.images, args.size, args.seed)
    results = {"regions without dots keep the dot-free colouring": now}
    if args.previous:
        results["previous: gaps in the lines not closed"] = measure(
            model, args.images, args.size, args.seed, gaps_open
        )
        results["regions without a dot keep the dotted colouring (gaps closed)"] = measure(
            model, args.images, args.size, args.seed, previous_rule
        )
    for rule, row in results.items():
        print(f"\n{rule} ({args.model}, {row.pop('drawings')} drawings at {args.size} px)")
        print("| region mean vs dot | region within 30 | outside mean change | outside moved > 30 |")
        print("|---:|---:|---:|---:|")
        r = list(row.values())
        print(f"| {r[0]:.1f} | {100 * r[1]:.1f} % | {r[2]:.2f} | {100 * r[3]:.2f} % |")


if __name__ == "__main__":
    main()
