"""`colorization curves`: dvc.yaml's top-level `plots:` drawn with matplotlib, beside an `index.html` of
images and text only (`dvc plots show` loads Vega from a CDN, so offline its page is blank)."""

from __future__ import annotations

import csv
import html
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from colorization.atomic import atomic_write_bytes, atomic_write_text

DEFAULT_OUT = "reports/curves"
LINE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


class CurvesError(ValueError):
    """dvc.yaml or a CSV that cannot be read; the message is one line."""


@dataclass
class Plot:
    name: str
    title: str
    x: str
    y: list[tuple[str, str]]  # (csv file, column)


def plot_definitions(dvc_yaml: str | Path = "dvc.yaml") -> list[Plot]:
    """The top-level `plots:` of dvc.yaml that name a CSV column to draw (x, y: {file: column})."""
    try:
        spec = yaml.safe_load(Path(dvc_yaml).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CurvesError(f"{dvc_yaml}: cannot be read ({err})") from None
    plots = []
    for entry in spec.get("plots") or []:
        if not isinstance(entry, dict):
            continue  # a bare path: DVC's own default rendering, nothing declared to draw
        for name, body in entry.items():
            body = body or {}
            if not isinstance(y := body.get("y"), dict):
                continue
            pairs = [(f, c) for f, cols in y.items() for c in ([cols] if isinstance(cols, str) else cols)]
            plots.append(Plot(name, body.get("title", name), body.get("x", "step"), pairs))
    return plots


def read_columns(path: Path, x: str, y: str) -> tuple[list[float], list[float]]:
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as err:
        raise CurvesError(f"{path}: cannot be read ({err.strerror or err})") from None
    if rows and (x not in rows[0] or y not in rows[0]):
        raise CurvesError(f"{path}: no column {x if x not in rows[0] else y!r} (has {', '.join(rows[0])})")
    xs, ys = [], []
    for row in rows:
        try:
            xv, yv = float(row[x]), float(row[y])
        except (TypeError, ValueError):
            continue
        if math.isfinite(xv) and math.isfinite(yv):
            xs.append(xv)
            ys.append(yv)
    return xs, ys


def render_plot(plot: Plot, root: Path) -> tuple[bytes, str]:
    """(PNG bytes, a one-line summary) of one plot; CSVs relative to `root`."""
    from matplotlib.figure import Figure  # no pyplot: nothing global to select or close

    fig = Figure(figsize=(7, 3.6), dpi=100)
    ax = fig.subplots()
    summary = []
    for (file, column), colour in zip(plot.y, itertools.cycle(LINE_COLOURS)):
        xs, ys = read_columns(root / file, plot.x, column)
        if not xs:
            summary.append(f"{file}: {column}: no data")
            continue
        ax.plot(xs, ys, color=colour, linewidth=1.2, label=f"{column} ({Path(file).stem})")
        summary.append(
            f"{Path(file).stem} {column}: {len(xs)} points, first {ys[0]:.4g}, last {ys[-1]:.4g}, "
            f"min {min(ys):.4g} at {plot.x} {xs[ys.index(min(ys))]:g}"
        )
    ax.set_title(plot.title)
    ax.set_xlabel(plot.x)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper right", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue(), "; ".join(summary)


def render_curves(dvc_yaml: str | Path = "dvc.yaml", out: str | Path = DEFAULT_OUT) -> list[Path]:
    """Each declared plot as `<out>/<name>.png`, and `<out>/index.html`; returns the files written."""
    dvc_yaml, out = Path(dvc_yaml), Path(out)
    plots = plot_definitions(dvc_yaml)
    if not plots:
        raise CurvesError(f"{dvc_yaml}: no plots with x and y columns under `plots:`")
    written, figures = [], []
    for plot in plots:
        title = html.escape(plot.title)
        missing = ", ".join(f for f, _ in plot.y if not (dvc_yaml.parent / f).is_file())
        if missing:
            figures.append(f"<h2>{title}</h2>\n<p>not trained yet: no {html.escape(missing)}</p>")
            continue
        png, summary = render_plot(plot, dvc_yaml.parent)
        path = out / f"{plot.name}.png"
        atomic_write_bytes(path, png)
        written.append(path)
        figures.append(
            f'<h2>{title}</h2>\n<img src="{html.escape(path.name)}" alt="{title}">\n'
            f"<p>{html.escape(summary)}</p>"
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Training curves</title>\n'
        "<style>body { font-family: sans-serif; margin: 2em; } img { max-width: 100%; }</style>\n"
        "</head>\n<body>\n<h1>Training curves</h1>\n"
        f"<p>The plots of {html.escape(str(dvc_yaml))}, drawn from the CSVs the train stages wrote.</p>\n"
        + "\n".join(figures)
        + "\n</body>\n</html>\n"
    )
    index = out / "index.html"
    atomic_write_text(index, page)
    return [*written, index]
