"""The `colorization` command: one subcommand per pipeline stage, plus `colorize`.

Every command reads params.yaml (or --params) into the typed config first, applies
its flags as overrides, and stops with one line before doing any work if a value is
wrong.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer

from colorization.config import DEFAULT_PARAMS, Params, ParamsError, load_params

app = typer.Typer(
    help="Automatic colorization of anime line art: data stages, training, evaluation, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ParamsOption = typer.Option(DEFAULT_PARAMS, "--params", help="params file (YAML)")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def params_or_exit(path: Path, overrides: dict[str, Any] | None = None) -> Params:
    try:
        return load_params(path, overrides)
    except ParamsError as err:
        fail(str(err))


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def acquire(
    params_file: Path = ParamsOption,
    source: str | None = typer.Option(None, help="synthetic | folder | safebooru"),
    input: Path | None = typer.Option(None, "--input", help="folder source: the folder to read"),
    out: Path | None = typer.Option(None, "--out", help="raw data folder"),
    count: int | None = typer.Option(None, help="synthetic: number of images"),
    base_url: str | None = typer.Option(None, help="safebooru: site URL"),
    tags: str | None = typer.Option(None, help="safebooru: tag query"),
    limit: int | None = typer.Option(None, help="safebooru: accepted images to collect"),
    min_size: int | None = typer.Option(None, help="smallest accepted width/height, px"),
) -> None:
    """Fill the raw folder with images and write manifest.parquet."""
    from colorization.acquire import NothingAcquired, run_acquire

    overrides = {
        "acquire.source": source,
        "acquire.folder.input": str(input) if input else None,
        "acquire.out": str(out) if out else None,
        "acquire.synthetic.count": count,
        "acquire.safebooru.base_url": base_url,
        "acquire.safebooru.tags": tags,
        "acquire.safebooru.limit": limit,
        "acquire.min_size": min_size,
        "acquire.safebooru.min_size": min_size,
    }
    params = params_or_exit(params_file, overrides)
    try:
        summary = run_acquire(params.acquire)
    except (FileNotFoundError, NothingAcquired) as err:
        fail(str(err), code=1)
    typer.echo(f"acquired {summary.accepted} images ({summary.rejected} rejected) -> {summary.manifest}")


@app.command()
def lineart(
    params_file: Path = ParamsOption,
    raw: Path | None = typer.Option(None, help="raw data folder (with manifest.parquet)"),
    out: Path | None = typer.Option(None, help="output store folder"),
) -> None:
    """Resize every raw image and extract its line art into the processed store."""
    from colorization.preprocess import build_lineart

    overrides = {"lineart.raw": str(raw) if raw else None, "lineart.out": str(out) if out else None}
    params = params_or_exit(params_file, overrides)
    try:
        meta = build_lineart(params.lineart)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err), code=1)
    typer.echo(f"line art for {meta['count']} images at {meta['image_size']}px, splits {meta['splits']}")


@app.command()
def histograms(
    params_file: Path = ParamsOption,
    raw: Path | None = typer.Option(None, help="raw data folder (with manifest.parquet)"),
    out: Path | None = typer.Option(None, help="output Parquet file"),
) -> None:
    """Compute the 512-bin colour hint of every raw image."""
    from colorization.preprocess import build_histograms

    overrides = {"histograms.raw": str(raw) if raw else None, "histograms.out": str(out) if out else None}
    params = params_or_exit(params_file, overrides)
    try:
        count = build_histograms(params.histograms)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err), code=1)
    typer.echo(f"histograms for {count} images -> {params.histograms.out}")


@app.command("check-params")
def check_params(params_file: Path = ParamsOption) -> None:
    """Validate the params file and exit."""
    params_or_exit(params_file)
    typer.echo(f"{params_file}: ok")
