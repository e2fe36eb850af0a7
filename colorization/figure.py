"""The paper's comparison figure, and colour hints drawn as palettes. Per test image: row 1 the inputs
(original, line art, colour hint, local hint dots), row 2 the methods' results (evaluate chooses them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from colorization.atomic import atomic_path
from colorization.histogram import bin_centers, heaviest_bins


def palette_bar(hint: np.ndarray, height: int, width: int) -> np.ndarray:
    """The hint as vertical stripes, uint8 [height, width, 3]: the 12 heaviest bins (each at least 1 %)
    in their bin centre's colour, widths by weight among those shown, heaviest left."""
    hint = np.asarray(hint, np.float64)
    keep = heaviest_bins(hint, 12, min_weight=0.01)  # a flat hint: its single heaviest bin
    weights = hint[keep] / max(hint[keep].sum(), 1e-12)
    edges = np.cumsum(weights) * width
    # Column x shows the stripe whose cumulative edge is the first one past its centre.
    stripe = np.minimum(np.searchsorted(edges, np.arange(width) + 0.5), len(keep) - 1)
    row = bin_centers()[keep][stripe]  # [width, 3]
    return np.ascontiguousarray(np.broadcast_to(row, (height, width, 3)))


@dataclass
class Example:
    """One test image and what every method made of it (all uint8, same size)."""

    image_id: str
    original: np.ndarray  # [S, S, 3]
    lineart: np.ndarray  # [S, S]
    hint: np.ndarray  # float [512]
    results: dict[str, np.ndarray]  # row 2, in order: panel title -> [S, S, 3]
    palettes: dict[str, np.ndarray] = field(default_factory=dict)  # title -> float [512], drawn under it
    points: np.ndarray | None = None  # float [4, S, S]: local hints (colorization.local_hints)
    dotted: str | None = None  # the result coloured with `points`: they are drawn on it too


INPUT_TITLES = ("original", "line art", "colour hint", "local hints")


def draw_dots(ax, points: np.ndarray) -> None:
    """Each local hint (a patch of the mask) as one dot in its colour, ringed in black so any colour shows."""
    count, _, _, centres = cv2.connectedComponentsWithStats((points[3] > 0).astype(np.uint8))
    if count < 2:
        return
    xs, ys = centres[1:, 0], centres[1:, 1]
    rows, cols = np.round(ys).astype(int), np.round(xs).astype(int)
    colours = (points[:3, rows, cols].T + 1) / 2
    ax.scatter(xs, ys, c=np.clip(colours, 0, 1), s=22, edgecolors="black", linewidths=0.8)


def example_rows(ex: Example) -> tuple[list, list]:
    """(title, image) per panel: the inputs, then the results (a palette strip under those that have one)."""
    size = ex.original.shape[0]
    shown = [ex.original, ex.lineart, palette_bar(ex.hint, size, size), ex.lineart]  # dots: on the lines
    n = len(shown) if ex.points is not None else 3
    inputs = list(zip(INPUT_TITLES[:n], shown[:n], strict=True))
    results = []
    for title, image in ex.results.items():
        if title in ex.palettes:  # e.g. the palette the hint model predicted, under the automatic result
            strip = palette_bar(ex.palettes[title], max(4, size // 8), size)
            image = np.concatenate([image, np.full((2, size, 3), 255, np.uint8), strip])
        results.append((title, image))
    return inputs, results


def comparison_figure(examples: list[Example], path: str | Path) -> Path:
    """Draw the 2-rows-per-image grid and save a PNG (a bare matplotlib Figure: no pyplot, no display)."""
    from matplotlib.figure import Figure

    if not examples:
        raise ValueError("no examples to draw")
    path = Path(path)
    rows = [example_rows(ex) for ex in examples]
    columns = max(len(row) for pair in rows for row in pair)
    fig = Figure(figsize=(2.5 * columns, 5.2 * len(examples)))
    axes = fig.subplots(2 * len(examples), columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ex, pair) in enumerate(zip(examples, rows, strict=True)):
        for r, row in enumerate(pair):
            for c, (title, image) in enumerate(row):
                ax = axes[2 * k + r, c]
                cmap = "gray" if image.ndim == 2 else None
                ax.imshow(image, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
                ax.set_title(f"{ex.image_id}: {title}" if (r, c) == (0, 0) else title, fontsize=9)
                if ex.points is not None and title in (INPUT_TITLES[3], ex.dotted):
                    draw_dots(ax, ex.points)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
