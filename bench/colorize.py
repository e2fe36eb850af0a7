"""Seconds per image of `colorize` (the path the CLI and the studio share), by input size.

For 512², 1024² and 2048² line art: `colorize_images` end to end (fit to the model's square,
the network, the colour scaled back, the full-size lines laid over it), batch 1 and batched,
on the CPU and, when there is one, on the GPU. The network's own share is timed alone too.
The default network is the paper-sized c-GAN (`profiles/paper.yaml`: 512 px U-Net, depth 8,
64..512 channels, untrained: weights do not change the time); `--model` times a trained one
(a models/<kind> folder or a models:/ URI). Model loading is timed once, cold and cached.

    python bench/colorize.py                         # CPU (+ GPU when present), paper c-GAN
    python bench/colorize.py --model models/cgan --sizes 512 1024 --repeat 3
    python bench/colorize.py --load models:/lineart-cgan@champion   # start-up: registry vs cache

On a GPU it then times the network alone as a server would run it: bf16, channels_last, eager
and compiled into a CUDA graph, batch 1 and batched (issue 11's targets: <= 1.5 ms at batch 1,
>= 5,000 images/s batched, 512²).

Prints tables; asserts nothing about time (measured numbers: docs/colorize.md, "Speed").
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from colorization.colorize import (
    GENERATOR_KINDS,
    HintSource,
    LoadedModel,
    colorize_images,
    fit_input,
    load_model,
    parse_palette,
)
from colorization.config import load_params, profile_overrides
from colorization.inference import colorize
from colorization.models import build_model

REPO = Path(__file__).resolve().parents[1]
PALETTE = "#f4c2a1:3,#3a5fcd:2,#ffffff:5"


def line_art(size: int, seed: int = 0) -> np.ndarray:
    """A size x size RGB drawing: black strokes of a few pixels on white paper."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 255, np.uint8)
    thickness = max(1, size // 256)
    for _ in range(40):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 20, size // 4, 2))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, (0, 0, 0), thickness)
    return image


def paper_cgan(device: str) -> LoadedModel:
    """The paper profile's c-GAN generator at its 512 px size, untrained."""
    params = load_params(REPO / "params.yaml", profile_overrides(REPO / "profiles/paper.yaml"))
    cgan = params.train.cgan
    arch = {k: getattr(cgan, k) for k in ("base_channels", "depth", "hint_dim", "hint_planes")}
    torch.manual_seed(0)
    module = build_model("cgan", arch).to(device).eval()
    return LoadedModel(module, "cgan", params.lineart.image_size, "profiles/paper.yaml c-GAN")


def timed(fn, repeat: int) -> float:
    """Best seconds of `repeat` calls after one warm-up call (the least disturbed by other processes)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_device(model: LoadedModel, device: str, sizes: list[int], batch: int, repeat: int):
    """Rows (device, input, batch, s / image end to end, s / image network alone), as they are measured."""
    hint = HintSource(fixed=parse_palette(PALETTE))
    for size in sizes:
        image = line_art(size)
        square = fit_input(image, model.image_size, model.recipe).lineart
        for n in (1, batch):

            def whole(images=[image] * n, n=n):
                colorize_images(images, model, hint, device, n)

            def network(squares=np.stack([square] * n), hints=np.repeat(hint.fixed[None], n, axis=0), n=n):
                colorize(model.module, squares, hints, device=device, batch_size=n)

            yield device, f"{size}²", n, timed(whole, repeat) / n, timed(network, repeat) / n


def gpu_network_rows(model: LoadedModel, batches: list[int], repeat: int, iters: int = 50):
    """The network alone on the GPU as a server keeps it: inputs already on the device, bf16
    autocast, channels_last; eager, then `torch.compile(mode="reduce-overhead")`, which replays
    the whole forward as one CUDA graph (no per-kernel launch cost at batch 1). Timed with CUDA
    events over `iters` calls; rows (variant, batch, ms / image, images / s)."""
    size, fmt = model.image_size, torch.channels_last
    module = model.module.to("cuda", memory_format=fmt).eval()
    hint = torch.tensor(parse_palette(PALETTE), device="cuda")
    variants = {"eager": module, "compiled, CUDA graph": torch.compile(module, mode="reduce-overhead")}
    for name, net in variants.items():
        for n in batches:
            x = (torch.rand(n, 1, size, size, device="cuda") * 2 - 1).contiguous(memory_format=fmt)
            h = hint.expand(n, -1).contiguous()

            def forward(net=net, x=x, h=h):
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return net(x, h)

            for _ in range(3):  # compilation, graph capture, cuDNN autotuning
                forward()
            best = float("inf")
            for _ in range(repeat):
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(iters):
                    forward()
                stop.record()
                torch.cuda.synchronize()
                best = min(best, start.elapsed_time(stop) / iters / n)
            yield name, n, best, 1000 / best


def load_times(spec: str) -> list[tuple[str, float]]:
    """Wall time of a fresh process loading `spec` as `colorize` does: first (cold), then again (cached)."""
    code = (
        "import time; t = time.perf_counter(); "
        "from colorization.colorize import load_model, GENERATOR_KINDS; "
        f"load_model({spec!r}, 'cpu', GENERATOR_KINDS); print(time.perf_counter() - t)"
    )
    found = []
    for label in ("first load", "second load"):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        found.append((f"{label}: process", time.perf_counter() - start))
        found.append((f"{label}: import + load_model", float(out.stdout.strip().splitlines()[-1])))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a models/<kind> folder or models:/ URI (default: paper c-GAN)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--batch", type=int, default=4, help="the batched run's batch size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("--load", metavar="SPEC", help="only time loading SPEC twice in fresh processes")
    args = parser.parse_args()

    if args.load:
        print(f"| loading {args.load} | seconds |\n|---|---|")
        for label, seconds in load_times(args.load):
            print(f"| {label} | {seconds:.2f} |")
        return

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    threads = torch.get_num_threads()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{threads} threads, load average {os.getloadavg()[0]:.1f}"
        + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else "")
    )
    print("| device | input | batch | s / image (colorize) | s / image (network alone) | model |", flush=True)
    print("|---|---|---|---|---|---|")
    for device in devices:
        model = load_model(args.model, device, GENERATOR_KINDS) if args.model else paper_cgan(device)
        for row in bench_device(model, device, args.sizes, args.batch, args.repeat):
            dev, size, n, total, net = row
            what = f"{model.source} ({model.image_size} px)"
            print(f"| {dev} | {size} | {n} | {total:.3f} | {net:.3f} | {what} |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}; best of {args.repeat} after a warm-up")
    if "cuda" in devices:
        model = load_model(args.model, "cuda", GENERATOR_KINDS) if args.model else paper_cgan("cuda")
        gpu = torch.cuda.get_device_name()
        print(f"\n# network alone on {gpu}, bf16, channels_last, {model.image_size}²")
        print("| variant | batch | ms / image | images / s |\n|---|---|---|---|", flush=True)
        for name, n, ms, per_s in gpu_network_rows(model, sorted({1, args.batch, 64}), args.repeat):
            print(f"| {name} | {n} | {ms:.3f} | {per_s:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
