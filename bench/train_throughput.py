"""c-GAN training throughput (images/s, achieved TFLOP/s) through the project's real data path.

Per image size: build a small synthetic store at that size (acquire -> lineart -> histograms,
in a temp folder), load its train split onto the device as uint8 (DeviceData), and time
`cgan_step` on batches from `sample_batch` (device-side sampling + augmentation), exactly
as `colorization train cgan` runs them. FLOPs of one training step are counted once with
`FlopCounterMode` on a two-picture batch. The data path is also timed
alone, to show it is not the bottleneck.

GPU (the default settings: bf16 autocast, channels_last, torch.compile, large batch):
    python bench/train_throughput.py
CPU smoke run:
    python bench/train_throughput.py --device cpu --sizes 64 --steps 3 --batch 4 --no-compile
Where the time goes (torch.profiler: a Chrome trace per size and the top kernels):
    python bench/train_throughput.py --sizes 512 --steps 10 --profile-to trace.json
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from colorization.acquire import run_acquire
from colorization.augment import DeviceData, sample_batch
from colorization.config import Params, load_params, profile_overrides
from colorization.device import configure, memory_format, pick_device
from colorization.models.steps import Batch, cgan_step
from colorization.preprocess import build_preprocess
from colorization.store import ProcessedStore
from colorization.train import build_nets

REPO = Path(__file__).resolve().parents[1]
H100_BF16_DENSE_TFLOPS = 989.0
DEFAULT_BATCH = {256: 256, 512: 64}  # GPU: fills an 80 GB H100 comfortably


def bench_params(profile: Path, size: int, root: Path, images: int, compile_: bool, device: str) -> Params:
    """The profile's c-GAN settings (params.yaml + its overrides), on a temp store of `images` pictures."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in profile_overrides(profile).items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    data["acquire"].update(source="synthetic", out=str(root / "raw"), min_size=min(64, size))
    data["acquire"]["synthetic"].update(count=images, size=size)
    data["lineart"].update(out=str(root / "lineart"), image_size=size)
    data["lineart"]["split"].update(val=0.0, test=0.0)  # every picture is a training picture
    data["histograms"].update(out=str(root / "histograms.parquet"))
    cgan = data["train"]["cgan"]
    cgan["depth"] = min(cgan["depth"], int(math.log2(size)) - 1)  # small smoke sizes need a shallower U-Net
    data["train"].update(compile=compile_, device=device)
    data["tracking"]["mlflow"] = False
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_params(path)


def build_store(params: Params) -> ProcessedStore:
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    return ProcessedStore(params.lineart.out, params.histograms.out)


def step_flops_per_image(params: Params, batch: Batch, device: torch.device) -> float:
    """FLOPs of one c-GAN training step (D update + G update, forward + backward) per image, counted on
    a real batch by fresh uncompiled networks: the local hints' propagation branches on the data, so
    the meta device (no data) cannot run it; it adds no counted FLOPs (pooling), only its time."""
    eager = params.model_copy(update={"train": params.train.model_copy(update={"compile": False})})
    nets = build_nets("cgan", eager, device)
    with FlopCounterMode(display=False) as counter:
        cgan_step(nets, batch, params.train.cgan, device)
    return float(counter.get_total_flops()) / len(batch.color)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return time.perf_counter() - t0


def run_size(args, size: int, device: torch.device) -> dict:
    batch_size = args.batch or DEFAULT_BATCH.get(size, 64)
    with tempfile.TemporaryDirectory(prefix=f"bench-{size}-") as tmp:
        params = bench_params(
            args.profile, size, Path(tmp), max(args.images, batch_size), args.compile, args.device
        )
        store = build_store(params)
        configure(device, params.train.seed)
        data = DeviceData.from_split(store.load("train"), device)
    gen = torch.Generator(device=device).manual_seed(0)
    fmt, aug = memory_format(device), params.train.augment
    mean_hint, xdog, local = data.mean_hint(), params.lineart.xdog, params.train.cgan.local_hints

    def batch(n: int = batch_size):  # as train.py samples: recolouring, hint blending, XDoG mix, local hints
        return sample_batch(
            data, n, gen, aug, fmt, recolour=True, mean_hint=mean_hint, xdog=xdog, local_hints=local
        )

    flops = step_flops_per_image(params, batch(2), device)
    nets = build_nets("cgan", params, device)

    def train_step():
        return cgan_step(nets, batch(), params.train.cgan, device)["g_loss"]

    def data_step():
        return batch()

    timed(train_step, args.warmup, device)  # compilation, cuDNN autotuning, allocator warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(train_step, args.steps, device)
    data_seconds = timed(data_step, max(args.steps, 10), device)
    if args.profile_to:
        profile_steps(train_step, device, args.profile_to.with_name(f"{args.profile_to.stem}-{size}.json"))
    images_per_s = args.steps * batch_size / seconds
    return {
        "size": size,
        "batch": batch_size,
        "img/s": images_per_s,
        "step ms": 1000 * seconds / args.steps,
        "GFLOP/img": flops / 1e9,
        "TFLOP/s": flops * images_per_s / 1e12,
        "data batch/s": max(args.steps, 10) / data_seconds,
        "data img/s": max(args.steps, 10) * batch_size / data_seconds,
        "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
    }


def profile_steps(train_step, device: torch.device, trace: Path, steps: int = 5) -> None:
    """`steps` training steps under torch.profiler: a Chrome trace (chrome://tracing, Perfetto)
    and the kernels that took the most device time, printed."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step()
        sync(device)
    trace.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace))
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n{steps} steps profiled -> {trace}; top kernels by {key}:")
    print(prof.key_averages().table(sort_by=key, row_limit=20))


def print_table(rows: list[dict], device: torch.device, args) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    settings = (
        f"bf16 autocast={device.type == 'cuda'} channels_last={device.type == 'cuda'} "
        f"compile={args.compile} threads={torch.get_num_threads()}"
    )
    print(f"\nc-GAN training throughput on {name} ({settings}); profile: {args.profile}")
    cols = list(rows[0])
    print(" | ".join(f"{c:>12}" for c in cols))
    print("-|-".join("-" * 12 for _ in cols))
    for row in rows:
        print(" | ".join(f"{_number(row[c]):>12}" for c in cols))
    if device.type == "cuda":
        best = max(r["TFLOP/s"] for r in rows)
        print(
            f"best: {best:.0f} TFLOP/s = {100 * best / H100_BF16_DENSE_TFLOPS:.0f}% of H100 bf16 dense peak"
        )


def _number(value) -> str:
    if isinstance(value, float) and abs(value) < 1000:
        return f"{value:.4g}"
    return f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=0, help="default: 256 at 256 px, 64 at 512 px")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per size")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    parser.add_argument("--images", type=int, default=256, help="pictures in the temp store")
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "paper.yaml")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--profile-to",
        type=Path,
        default=None,
        help="profile 5 steps per size too: a Chrome trace NAME-<size>.json each",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = pick_device(args.device)
    if args.compile is None:
        args.compile = device.type == "cuda"
    print_table([run_size(args, size, device) for size in args.sizes], device, args)


if __name__ == "__main__":
    main()
