"""Real-image quality benchmark: the project's own pipeline on a folder of real pictures.

    python bench/quality.py FOLDER [--profile profiles/real-cpu.yaml] [--work DIR]

In a fresh work folder: folder source -> preprocess (line art + histograms) -> train cnn, cgan, hint ->
evaluate, with params.yaml overridden by the profile (which holds only what differs) and
every path pointed into the work folder; MLflow stays off. Prints the stage times, the
table of methods (PSNR on the test split) and each target of issue 10 met or missed.
Copy the printed table into bench/QUALITY.md with what changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from colorization.config import Params, load_params, profile_overrides  # noqa: E402

ROWS = [
    ("grey", "line art as grey"),
    ("flat_fill_hint_mean", "flat fill, true hint's mean colour (sees the true hint)"),
    ("flat_fill_train_mean", "flat fill, training set's average colour (sees nothing)"),
    ("cnn", "CNN, true hint"),
    ("cgan", "c-GAN, true hint"),
    ("cgan_auto_hint", "c-GAN, automatic hint"),
    ("cgan_wrong_hint", "c-GAN, another test image's hint"),
    ("cgan_avg_hint", "c-GAN, training set's average hint"),
]


def work_params(folder: Path, work: Path, profile: Path | None) -> Params:
    """params.yaml + the profile, with the folder as source and every output under `work`."""
    overrides = profile_overrides(profile) if profile else {}
    overrides |= {
        "acquire.source": "folder",
        "acquire.folder.input": str(folder.resolve()),
        "acquire.out": str(work / "raw"),
        "lineart.out": str(work / "lineart"),
        "histograms.out": str(work / "histograms.parquet"),
        "tracking.mlflow": False,
        "train.out": str(work / "models"),
        "evaluate.metrics": str(work / "evaluation.json"),
        "evaluate.reports": str(work / "reports"),
    }
    return load_params(REPO / "params.yaml", overrides)


def run_pipeline(params: Params, work: Path) -> tuple[dict, dict[str, float]]:
    from colorization.acquire import run_acquire
    from colorization.config import StageInputs
    from colorization.evaluate import run_evaluate
    from colorization.preprocess import build_preprocess
    from colorization.train import train

    times: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times[name] = time.perf_counter() - start
        print(f"  {name:<10} {times[name]:7.1f} s", flush=True)
        return out

    timed("acquire", run_acquire, params.acquire)
    inputs = StageInputs.of(params)
    timed("preprocess", build_preprocess, inputs.raw, params.lineart, params.histograms)
    for kind in ("cnn", "cgan", "hint"):
        timed(
            f"train@{kind}",
            train,
            params,
            kind,
            inputs,
            out_dir=work / "models" / kind,
            checkpoint_dir=work / "checkpoints" / kind,
            plots_path=work / "plots" / f"{kind}.csv",
        )
    result = timed("evaluate", run_evaluate, params.evaluate, inputs)
    return result, times


def line_variants(params: Params, color: np.ndarray, stored: np.ndarray) -> dict[str, np.ndarray]:
    """The test split's line art as different artists' tools would draw it."""
    from colorization.lineart import thicken, xdog

    x = params.lineart.xdog
    soft = np.stack([xdog(c, x.sigma, x.k, x.tau, x.epsilon, x.phi) for c in color])
    return {
        "canny (as trained)": stored,
        "canny, 1 px thicker": np.stack([thicken(line, 1) for line in stored]),
        "xdog": soft,
        "xdog, coarser (sigma x 1.5)": np.stack(
            [xdog(c, 1.5 * x.sigma, x.k, x.tau, x.epsilon, x.phi) for c in color]
        ),
    }


def per_extractor(params: Params) -> dict[str, dict]:
    """cgan (true hint) and cgan_auto_hint on the test split, once per line-art variant."""
    from dataclasses import replace

    from colorization.config import StageInputs
    from colorization.evaluate import TrainingReference, evaluate_models, load_models, load_split
    from colorization.store import ProcessedStore

    inputs = StageInputs.of(params)
    split = load_split(params.evaluate, inputs)
    reference = TrainingReference.of_store(ProcessedStore(inputs.store, inputs.histograms))
    models = load_models(inputs.models)
    out = {}
    for name, lines in line_variants(params, split.color, split.lineart).items():
        scores, _ = evaluate_models(
            models, replace(split, lineart=lines), reference, params.evaluate.batch_size, local=False
        )
        out[name] = {k: scores[k]["psnr"] for k in ("cnn", "cgan", "cgan_auto_hint", "flat_fill_hint_mean")}
    return out


def print_extractors(table: dict[str, dict]) -> None:
    keys = ("cnn", "cgan", "cgan_auto_hint")
    print("\n| line art of the test split | CNN dB | c-GAN dB | c-GAN auto hint dB |\n|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    values = {k: np.array([row[k] for row in table.values()]) for k in keys}
    print(
        "| mean +- spread (std) | "
        + " | ".join(f"{v.mean():.2f} +- {v.std():.2f}" for v in values.values())
        + " |"
    )


def targets(r: dict) -> list[tuple[str, float, float, bool]]:
    """(target, measured, needed, met) for each target of issue 10."""
    psnr = {k: r[k]["psnr"] for k, _ in ROWS}
    real_colour = r["original"]["colorfulness"]
    colour_gap = abs(r["cgan"]["colorfulness"] - real_colour) / real_colour
    rows = [
        ("c-GAN true hint - hint-mean flat fill (dB)", psnr["cgan"] - psnr["flat_fill_hint_mean"], 2.5),
        (
            "c-GAN auto hint - average flat fill (dB)",
            psnr["cgan_auto_hint"] - psnr["flat_fill_train_mean"],
            1.0,
        ),
        ("auto hint chi2 / average hint chi2 (at most)", r["hint"]["chi2_vs_avg"], 0.6),
        ("hint obedience, c-GAN (levels)", r["obedience"]["cgan"], 200.0),
        ("c-GAN colourfulness off the real images' (at most)", colour_gap, 0.15),
    ]
    out = []
    for name, value, needed in rows:
        at_most = "(at most)" in name
        out.append((name, value, needed, value <= needed if at_most else value >= needed))
    return out


POINTS = (0, 1, 2, 5, 10, 20)  # colorization.local_eval.POINT_COUNTS, as evaluation.json keys them
HINTS = (("true", "true hint"), ("auto", "automatic hint"))


def local_targets(r: dict) -> list[tuple[str, float, float, bool]]:
    """(target, measured, needed, met) for each target of issue 25 (c-GAN, local hints)."""
    curve = r["local_points"]["cgan"]

    def gain(hint: str, n: int) -> float:
        return curve[f"{hint}/{n}/psnr"] - curve[f"{hint}/0/psnr"]

    rows = [
        ("c-GAN 0 points, true hint (dB; e13: 14.67)", curve["true/0/psnr"], 14.67),
        ("c-GAN 0 points, automatic hint (dB; e13: 12.89)", curve["auto/0/psnr"], 12.89),
        ("true hint: 10 points - 0 points (dB)", gain("true", 10), 1.5),
        ("true hint: 20 points - 0 points (dB)", gain("true", 20), 2.5),
        ("automatic hint: 10 points - 0 points (dB)", gain("auto", 10), 2.0),
        ("automatic hint: 20 points - 0 points (dB)", gain("auto", 20), 3.0),
        ("points within 30 levels of their colour", r["local_obedience"]["cgan"]["within_30"], 0.9),
    ]
    out = [(name, value, needed, value >= needed) for name, value, needed in rows]
    for hint, label in HINTS:
        steps = [gain(hint, b) - gain(hint, a) for a, b in zip(POINTS, POINTS[1:], strict=False)]
        out.append((f"{label}: smallest rise between point counts (dB)", min(steps), 0.0, min(steps) > 0))
    return out


def print_local(r: dict) -> None:
    """The ideepcolor curve per generator and global hint, and local obedience."""
    if "local_points" not in r:
        print("\n(no generator takes local hints)")
        return
    print("\n| model, global hint | " + " | ".join(f"{n} pts" for n in POINTS) + " |")
    print("|---|" + "---|" * len(POINTS))
    for kind, curve in r["local_points"].items():
        for hint, label in HINTS:
            cells = [f"{curve[f'{hint}/{n}/psnr']:.2f}" for n in POINTS]
            print(f"| {kind}, {label} (PSNR dB) | " + " | ".join(cells) + " |")
            cells = [f"{curve[f'{hint}/{n}/colorfulness']:.1f}" for n in POINTS]
            print(f"| {kind}, {label} (colourfulness) | " + " | ".join(cells) + " |")
    for kind, o in r["local_obedience"].items():
        print(
            f"\nlocal obedience, {kind}: points of random colour are {o['distance']:.1f} levels off "
            f"(mean over R, G, B); {100 * o['within_30']:.1f} % within 30"
        )
    print("\n| target (issue 25) | measured | needed | met |\n|---|---|---|---|")
    for name, value, needed, met in local_targets(r):
        print(f"| {name} | {value:.3f} | {needed:g} | {'yes' if met else 'NO'} |")


def print_report(r: dict, times: dict[str, float], params: Params) -> None:
    size = params.lineart.image_size
    print(f"\n{r['images']} test images, {size} px\n")
    print(f"| method (PSNR on the test split, {size} px) | dB | SSIM | colourfulness |")
    print("|---|---|---|---|")
    for key, label in ROWS:
        m = r[key]
        print(f"| {label} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['colorfulness']:.1f} |")
    print(f"| (real images) | | | {r['original']['colorfulness']:.1f} |")
    h = r["hint"]
    print(
        f"\nhint model chi2 {h['chi2']:.3f} vs the average hint's {h['avg_chi2']:.3f} "
        f"(ratio {h['chi2_vs_avg']:.3f})"
    )
    print(
        f"hint obedience (mean R - B, red minus blue one-hot): cnn {r['obedience']['cnn']:.0f}, "
        f"cgan {r['obedience']['cgan']:.0f}"
    )
    print("\n| target | measured | needed | met |\n|---|---|---|---|")
    for name, value, needed, met in targets(r):
        print(f"| {name} | {value:.3f} | {needed:g} | {'yes' if met else 'NO'} |")
    print_local(r)
    total = sum(times.values())
    print(
        "\nstage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()) + f"; total {total:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="folder of real images (searched recursively)")
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "real-cpu.yaml")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the evaluation JSON here")
    parser.add_argument("--report", action="store_true", help="only print the tables of --json's file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.report:
        body = json.loads(args.json.read_text())
        params = work_params(args.folder, Path(tempfile.gettempdir()), args.profile)
        print_report(body["evaluation"], body["times"], params)
        print_extractors(body["extractors"])
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="quality-"))
    work.mkdir(parents=True, exist_ok=True)
    params = work_params(args.folder, work, args.profile)
    print(f"profile {args.profile}, work folder {work}", flush=True)
    try:
        result, times = run_pipeline(params, work)
        print_report(result, times, params)
        extractors = per_extractor(params)
        print_extractors(extractors)
        if args.json:
            body = {"evaluation": result, "times": times, "extractors": extractors}
            args.json.write_text(json.dumps(body, indent=2) + "\n")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
