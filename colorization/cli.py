"""The `colorization` command: one subcommand per pipeline stage, plus `colorize`. Each reads the
params file with its flags as overrides, and stops with one line before any work if a value is wrong."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from colorization import config, cpu_kernels

app = typer.Typer(
    help="Automatic colorization of anime line art: data stages, training, evaluation, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ParamsOption = typer.Option(config.DEFAULT_PARAMS, "--params", help="params file (YAML)")
# A stage's inputs: dvc.yaml passes them; by hand they default to where those stages write (StageInputs.of).
StoreOption = typer.Option(None, "--store", help="line-art store folder (default: lineart.out)")
HistogramsOption = typer.Option(None, "--histograms", help="colour hints Parquet (default: histograms.out)")
ModelsOption = typer.Option(None, "--models", help="folder with cnn/, cgan/, hint/ (default: train.out)")
WorkdirOption = typer.Option(Path("."), "--workdir", help="project folder; --params is read in it")
SetOption = typer.Option([], "--set", help="override a param, KEY=VALUE (value read as YAML)")
UntilOption = typer.Option(None, help="last stage to run: acquire ... register (default: all)")
USER_PARAMS_HELP = (  # colorize's and studio's --params
    "its `lineart` section: {} limits, and the lines of a model saved without its recipe "
    "(default: ./params.yaml if there, else built in)"
)
HINTS_HELP = (
    "local colour hints for the one input: an RGBA layer its size (opaque = colour) or a JSON list "
    'of points [{"x", "y", "color": "#rrggbb", "radius"}]'
)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def failing(*errors: type[BaseException], code: int = 1):
    """One of `errors` raised inside ends the command: its one-line message, exit `code`."""
    try:
        yield
    except errors as err:
        fail(str(err), code)


def checked_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


DeviceOption = typer.Option("auto", help="auto (GPU when present) | cpu | cuda", callback=checked_device)


def params_or_exit(path: Path, overrides: dict[str, Any] | None = None) -> config.Params:
    """The params file with the flow's untracked overrides (`run_overrides`), then `overrides`."""
    given = {key: str(v) if isinstance(v, Path) else v for key, v in (overrides or {}).items()}
    with failing(config.ParamsError, code=2):
        return config.load_params(path, {**config.run_overrides(), **given})


@app.callback()
def main(
    ctx: typer.Context, verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")
) -> None:
    from colorization.processes import die_with_stage_runners

    die_with_stage_runners()  # under `dvc repro`: a kill of DVC (or of the flow) ends this stage too
    if ctx.invoked_subcommand in cpu_kernels.COMMANDS:  # before torch loads: the same bits on every CPU
        with failing(ValueError, code=2):
            cpu_kernels.pin()
    logging.basicConfig(  # to stderr
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
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
    from colorization import acquire as stage

    overrides = {
        "acquire.source": source,
        "acquire.folder.input": input,
        "acquire.out": out,
        "acquire.synthetic.count": count,
        "acquire.safebooru.base_url": base_url,
        "acquire.safebooru.tags": tags,
        "acquire.safebooru.limit": limit,
        "acquire.min_size": min_size,
        "acquire.safebooru.min_size": min_size,
    }
    params = params_or_exit(params_file, overrides)
    try:
        summary = stage.run_acquire(params.acquire)
    except Exception as err:
        if stage.is_transient(err, params.acquire.source):
            fail(f"{type(err).__name__}: {err}", code=stage.TEMPORARY_FAILURE)
        if isinstance(err, (FileNotFoundError, stage.NothingAcquired, stage.FoldersOverlap)):
            fail(str(err), code=1)
        raise
    typer.echo(f"acquired {summary.accepted} images ({summary.rejected} rejected) -> {summary.manifest}")


@app.command()
def preprocess(
    params_file: Path = ParamsOption,
    raw: Path | None = typer.Option(
        None, help="raw data folder with manifest.parquet (default: acquire.out)"
    ),
    out: Path | None = typer.Option(None, help="output store folder (default: lineart.out)"),
    histograms: Path | None = typer.Option(
        None, help="output histograms Parquet file (default: histograms.out)"
    ),
) -> None:
    """Decode every raw image once: its colour hint, then resized colour + line art, into the store."""
    from colorization.preprocess import build_preprocess

    params = params_or_exit(params_file, {"lineart.out": out, "histograms.out": histograms})
    with failing(FileNotFoundError, ValueError):
        meta = build_preprocess(config.StageInputs.of(params, raw=raw).raw, params.lineart, params.histograms)
    typer.echo(
        f"line art for {meta['count']} images at {meta['image_size']}px, splits {meta['splits']}; "
        f"histograms -> {params.histograms.out}"
    )


@app.command()
def train(
    model: str = typer.Argument(..., help="cnn | cgan | hint"),
    params_file: Path = ParamsOption,
    steps: int | None = typer.Option(None, help="training steps (default: train.<model>.steps)"),
    out: Path | None = typer.Option(None, "--out", help="model folder (default: train.out/<model>)"),
    store: Path | None = StoreOption,
    histograms: Path | None = HistogramsOption,
) -> None:
    """Train one model; resumes from checkpoints/<model>/ when a matching checkpoint is there."""
    from colorization.locking import FolderBusy
    from colorization.models import KINDS
    from colorization.train import NonFiniteLoss
    from colorization.train import train as run_train

    if model not in KINDS:
        fail(f"unknown model {model!r}; expected one of {', '.join(KINDS)}")
    params = params_or_exit(params_file, {f"train.{model}.steps": steps})
    inputs = config.StageInputs.of(params, store=store, histograms=histograms)
    with failing(FileNotFoundError, ValueError, NonFiniteLoss, FolderBusy):
        folder = run_train(params, model, inputs, out_dir=out)
    typer.echo(f"trained {model} -> {folder}")


@app.command()
def evaluate(
    params_file: Path = ParamsOption,
    models_dir: Path | None = ModelsOption,
    store: Path | None = StoreOption,
    histograms: Path | None = HistogramsOption,
    metrics: Path | None = typer.Option(None, help="output metrics JSON (default: evaluate.metrics)"),
    max_images: int | None = typer.Option(None, help="score only the first N images (0 = all)"),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not log the evaluation to MLflow"),
) -> None:
    """Score every method on the test split; write metrics/evaluation.json and reports/comparison.png."""
    from colorization.evaluate import METHODS, evaluate_stage

    params = params_or_exit(params_file, {"evaluate.metrics": metrics, "evaluate.max_images": max_images})
    inputs = config.StageInputs.of(params, store=store, histograms=histograms, models=models_dir)
    with failing(FileNotFoundError, ValueError):
        result, _ = evaluate_stage(params, inputs, track=not no_mlflow)
    keys = ("psnr", "ssim", "l1", "hint_chi2", "colorfulness")
    typer.echo(f"{result['images']} {result['split']} images -> {params.evaluate.metrics}")
    typer.echo(f"{'method':<22}" + "".join(f"{k:>14}" for k in keys))
    for method in METHODS:
        typer.echo(f"{method:<22}" + "".join(f"{result[method][k]:>14.4f}" for k in keys))
    hint = result["hint"]
    typer.echo(
        f"hint model: chi2 {hint['chi2']:.4f} (average hint {hint['avg_chi2']:.4f}, "
        f"ratio {hint['chi2_vs_avg']:.3f}), KL {hint['kl']:.4f} (average hint {hint['avg_kl']:.4f})"
    )
    obeyed = ", ".join(f"{kind} {value:.1f}" for kind, value in result["obedience"].items())
    typer.echo(f"hint obedience (red - blue one-hot, mean R - B levels): {obeyed}")


@app.command()
def register(
    params_file: Path = ParamsOption,
    models_dir: Path | None = ModelsOption,
    store: Path | None = StoreOption,
    histograms: Path | None = HistogramsOption,
    evaluation: Path | None = typer.Option(
        None, help="the evaluate stage's metrics JSON (default: evaluate.metrics)"
    ),
) -> None:
    """Register the trained models in MLflow; a version beating the champion becomes champion."""
    from colorization.register import run_register
    from colorization.tracking.registry import RegistryError

    params = params_or_exit(params_file)
    inputs = config.StageInputs.of(
        params, store=store, histograms=histograms, models=models_dir, evaluation=evaluation
    )
    with failing(RegistryError, FileNotFoundError, ValueError):
        results = run_register(params, inputs)
    for r in results:
        version = "" if r.version is None else f" v{r.version} (champion v{r.champion})"
        typer.echo(f"{r.name}{version}: {r.reason}")


def user_lineart(params_file: Path | None) -> config.LineartParams | None:
    """The `lineart` section of --params, else of ./params.yaml; None run outside a project folder."""
    if params_file is None and not config.DEFAULT_PARAMS.exists():
        return None
    return params_or_exit(params_file or config.DEFAULT_PARAMS).lineart


@app.command()
def colorize(
    inputs: list[Path] = typer.Argument(..., help="line art or colour images, or folders of them"),
    out: Path = typer.Option(
        ..., "--out", "-o", help="output image (.png, .jpg or .webp; one input image only) or folder"
    ),
    model: str = typer.Option(
        "models:/lineart-cgan@champion", "--model", help="registry URI or a local models/<name> folder"
    ),
    reference: Path | None = typer.Option(None, "--reference", help="colour image; its histogram = hint"),
    palette: str | None = typer.Option(
        None, "--palette", help="hint from colours: '#rrggbb:weight,...', or a palette file (.gpl, .json)"
    ),
    hint_model: str | None = typer.Option(
        None, "--hint-model", help="automatic hint: URI or folder (default models:/lineart-hint@champion)"
    ),
    device: str = DeviceOption,
    batch_size: int = typer.Option(16, min=1, help="images per forward pass"),
    params_file: Path | None = typer.Option(None, "--params", help=USER_PARAMS_HELP.format("input")),
    lineart: str | None = typer.Option(
        None, "--lineart", help="extractor for colour inputs: canny | xdog (default: the model's recipe)"
    ),
    layers: bool = typer.Option(
        False, "--layers", help="also write NAME.colour.png (colour only) and NAME.lines.png (lines, alpha)"
    ),
    hints: Path | None = typer.Option(None, "--hints", help=HINTS_HELP),
) -> None:
    """Colour line art (or colour images, via their line art) of any size; writes images of the same size.

    The colour is made at the model's size and scaled up; the lines on top are the input's
    own, at full size.

    An input that cannot be read is reported on its own line and the others are coloured;
    the exit code is 1 when any failed.
    """
    from colorization.colorize import ColorizeError, run_colorize

    section = user_lineart(params_file)
    options = (model, reference, palette, hint_model, device, batch_size, layers, lineart, hints)
    with failing(ColorizeError, RuntimeError):
        result = run_colorize(inputs, out, section, *options)
    for line in result.failed:  # one `error:` line each, then what was written; exit 1 if any failed
        typer.echo(f"error: {line}", err=True)
    done, failed = len(result.written), len(result.failed)
    target = result.written[0] if done == 1 else out
    if failed:
        if done:
            typer.echo(f"coloured {done} of {done + failed} images -> {target}; {failed} failed")
        raise typer.Exit(1)
    typer.echo(f"coloured {done} image(s) -> {target}")


@app.command("palette")
def palette_command(
    image: Path = typer.Argument(..., help="a colour picture (PNG, JPEG or WebP)"),
    out: Path = typer.Option(..., "--out", "-o", help="palette file: .gpl (GIMP) or .json"),
    colours: int = typer.Option(16, "--colours", min=1, max=512, help="at most this many colours"),
) -> None:
    """Write an image's palette (its heaviest colour bins, with their weights), for --palette."""
    from colorization.atomic import atomic_write_text
    from colorization.colorize import ColorizeError, read_image
    from colorization.palette import PALETTE_SUFFIXES, PaletteError, format_palette, image_palette

    if out.suffix.lower() not in PALETTE_SUFFIXES:
        fail(f"-o {out}: a palette file is .gpl or .json")
    try:
        entries = image_palette(read_image(image), colours)
        atomic_write_text(out, format_palette(entries, out.suffix, name=image.stem))
    except (ColorizeError, PaletteError) as err:
        fail(str(err), code=1)
    except OSError as err:
        fail(f"{out}: cannot be written ({err.strerror or err})", code=1)
    typer.echo(f"{len(entries)} colours ({sum(w for _, w in entries):.1%} of the pixels) -> {out}")


@app.command()
def curves(
    out: Path = typer.Option(Path("reports/curves"), "--out", "-o", help="folder for PNGs and index.html"),
    dvc_yaml: Path = typer.Option(Path("dvc.yaml"), "--dvc-yaml", help="the plots to draw: its `plots:`"),
) -> None:
    """The training curves of dvc.yaml's plots as PNGs and a page that works offline."""
    from colorization.curves import CurvesError, render_curves

    with failing(CurvesError):
        written = render_curves(dvc_yaml, out)
    typer.echo(f"{len(written) - 1} curves -> {written[-1]}")


@app.command()
def studio(
    models_dir: Path = typer.Option(Path("models"), "--models", help="folder with cnn/, cgan/, hint/"),
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback: only this machine)"),
    port: int = typer.Option(8000, min=0, max=65535),
    device: str = DeviceOption,
    max_upload_mb: float = typer.Option(32.0, "--max-upload-mb", min=0.001, help="largest upload, MiB"),
    concurrency: int | None = typer.Option(None, min=1, help="uploads coloured at once [default: cores]"),
    queue: int | None = typer.Option(
        None, min=0, help="uploads waiting for those; more are answered 503 [default: 2 x concurrency]"
    ),
    params_file: Path | None = typer.Option(None, "--params", help=USER_PARAMS_HELP.format("upload")),
) -> None:
    """Serve the colouring page at http://HOST:PORT/ (API: POST /api/colorize, documented at /docs)."""
    import uvicorn

    from colorization.device import pick_device
    from colorization.studio import StudioConfig, create_app

    lineart_params = user_lineart(params_file)
    with failing(RuntimeError, code=2):
        torch_device = str(pick_device(device))
    # A registry that is down should answer the page in seconds, not after MLflow's retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    settings = StudioConfig(
        models_dir, lineart_params, torch_device, int(max_upload_mb * 2**20), concurrency, queue
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: binding {host}: anyone who can reach this machine can use the studio", err=True)
    typer.echo(f"studio: http://{host}:{port}/ (models: {models_dir}, device: {torch_device})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def import_checkout(workdir: Path = Path(".")) -> None:
    """Make the checkout's flows/ and tasks/ (not installed packages) importable: --workdir's, else here."""
    # Before Prefect is imported: with the root logger free, Prefect's logging prints run logs with
    # their run names, not every HTTP request its client makes (which our INFO root handler would).
    logging.root.handlers.clear()
    for folder in (workdir.resolve(), Path.cwd().resolve()):
        if (folder / "flows" / "pipeline.py").is_file() and (folder / "tasks" / "dvc.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return
    if importlib.util.find_spec("flows") is None:
        fail(
            f"flows/ and tasks/ not found in {workdir} or the current folder: "
            "run this from the project checkout"
        )


def checkout_overrides(workdir: Path, settings: list[str]) -> dict[str, Any] | None:
    """--set KEY=VALUE as the checkout's flows/ parse them; Prefect's console from here on."""
    import_checkout(workdir)
    from flows.pipeline import parse_overrides

    return parse_overrides(settings) or None


@app.command()
def pipeline(
    params_file: Path = ParamsOption,
    workdir: Path = WorkdirOption,
    set_: list[str] = SetOption,
    until: str | None = UntilOption,
) -> None:
    """Run dvc.yaml's stages through DVC as one Prefect flow run (retries, schedule, summary)."""
    # Prefect is imported here only: the other commands must not pay for it or need it.
    overrides = checkout_overrides(workdir, set_)
    from flows.pipeline import check_run
    from flows.pipeline import pipeline as run_pipeline

    with failing(config.ParamsError, code=2):
        check_run(params_file, overrides, until, workdir)  # refused in one line, before a run starts
    try:
        result = run_pipeline(str(params_file), str(workdir), overrides, until)
    except Exception as err:  # the flow run's log has the traceback
        fail(f"pipeline failed: {type(err).__name__}: {err}", code=1)
    ran, skipped = ", ".join(result["ran"]) or "nothing", ", ".join(result["skipped"]) or "nothing"
    typer.echo(f"pipeline done: DVC ran {ran}; up to date: {skipped}")


@app.command()
def serve(
    params_file: Path = ParamsOption,
    workdir: Path = WorkdirOption,
    set_: list[str] = SetOption,
    until: str | None = typer.Option(None, help="last stage of every run (default: all)"),
) -> None:
    """Serve the pipeline as the scheduled deployment of params `pipeline:` (server: PREFECT_API_URL).

    --set applies to every run and to the `pipeline:` section itself (e.g. --set pipeline.cron='*/2 * * * *').
    """
    overrides = checkout_overrides(workdir, set_)
    params_or_exit(workdir / params_file, overrides)
    from flows.serve import serve as run_serve

    with failing(config.ParamsError, code=2):
        run_serve(str(params_file), str(workdir), overrides, until)


@app.command()
def trigger(
    params_file: Path = ParamsOption,
    workdir: Path = WorkdirOption,
    deployment: str | None = typer.Option(
        None, help="FLOW/DEPLOYMENT (default: pipeline/<pipeline.deployment of --params>)"
    ),
    set_: list[str] = SetOption,
    until: str | None = UntilOption,
    watch: bool = typer.Option(False, "--watch", help="follow the run to its end; exit 1 if it fails"),
) -> None:
    """Start a run of the served deployment now, with overrides; --watch follows it."""
    overrides = checkout_overrides(workdir, set_)
    if deployment is None:
        deployment = f"pipeline/{params_or_exit(workdir / params_file).pipeline.deployment}"
    from flows.trigger import TriggerError
    from flows.trigger import trigger as run_trigger

    with failing(config.ParamsError, code=2), failing(TriggerError):
        ok = run_trigger(deployment, overrides, until, watch, echo=typer.echo)
    if not ok:
        raise typer.Exit(1)


@app.command()
def summary(
    run: str | None = typer.Option(None, "--run", help="flow run name or id (default: the newest summary)"),
) -> None:
    """Print a pipeline run's `pipeline-summary` artifact (markdown) from the Prefect server."""
    import_checkout()
    from flows.trigger import TriggerError, latest_summary

    with failing(TriggerError):
        typer.echo(latest_summary(run))


@app.command("check-params")
def check_params(params_file: Path = ParamsOption) -> None:
    """Validate the params file and exit."""
    params_or_exit(params_file)
    typer.echo(f"{params_file}: ok")


@app.command()
def profile(
    profile_file: Path = typer.Argument(..., help="a profile: YAML with only what differs from params"),
    params_file: Path = ParamsOption,
) -> None:
    """Print a profile as `dvc exp run` arguments: dvc exp run $(colorization profile FILE)."""
    with failing(config.ParamsError, code=2):
        overrides = config.profile_overrides(profile_file)
    params_or_exit(params_file, overrides)  # the merged params must be valid before anything runs

    def as_yaml(value) -> str:  # a -S value DVC parses back to the same YAML value
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    typer.echo(" ".join(f"-S {key}={as_yaml(value)}" for key, value in overrides.items()))
