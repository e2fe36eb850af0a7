"""Does CPU training give the same bits on another x86 machine? (issue 26, item 5)

Another machine cannot be borrowed, but its kernel path can be emulated on this one:
`ATEN_CPU_CAPABILITY` picks PyTorch's own kernels (default | avx2 | avx512),
`ONEDNN_MAX_CPU_ISA` caps oneDNN's JIT convolutions, `MKL_ENABLE_INSTRUCTIONS` caps MKL's
dispatch, and `OMP_NUM_THREADS` stands for the core count. Each row trains `colorization
train <kind>` as a CLI process (what `dvc repro` runs) on one small synthetic store, with
the demo's network settings, and prints a digest of the published weights and of the loss
log, and the training speed. Rows that agree print the same digests.

    python bench/cpu_reproducibility.py                  # cgan, 40 steps, every row
    python bench/cpu_reproducibility.py --kind cnn --steps 60 --rows native avx2-machine
    python bench/cpu_reproducibility.py --raw-env        # without the project's pinning
                                                         # (COLORIZATION_CPU_KERNELS=native)

Measured on a 2-core AMD EPYC with AVX-512 (torch 2.13.0+cpu, oneDNN 3.12, MKL 2024.2), the
demo's c-GAN at 64 px, 30 steps (weights digest; img/s is noisy on a shared machine):

| row | unpinned | pinned |
|---|---|---|
| native (1 thread) | e05e25b17a49 | c4970c182584 |
| native-2-threads | 1854d7e47d5a | c4970c182584 |
| aten-avx2 | e05e25b17a49 | c4970c182584 |
| aten-default | c5b1f70f2c52 | c4970c182584 |
| onednn-avx2 | 281ffbb1a9f1 | c4970c182584 |
| mkl-avx2 | e05e25b17a49 | c4970c182584 |
| avx2-machine | 281ffbb1a9f1 | c4970c182584 |
| avx2-machine-2-threads | 37c6941f5821 | c4970c182584 |

Unpinned, the thread count, PyTorch's generic kernels and oneDNN's AVX2 convolutions each
change the bits; MKL_ENABLE_INSTRUCTIONS=AVX2 does not here (on this AMD CPU MKL ignores
MKL_CBWR=AVX2 too: MKL_VERBOSE reports CNR:AUTO, hence the COMPATIBLE branch).
Speed, 2 threads, 80 steps, three alternating runs each: unpinned 125 / 146 / 142 img/s,
pinned 116 / 148 / 121 img/s (mean 138 -> 128, -7 %, within the noise). On a machine with
more cores the pinning also leaves all but 2 of them idle.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from colorization.cpu_kernels import MODE, PORTABLE

REPO = Path(__file__).resolve().parents[1]

# Machines to emulate: the env a process of that machine would have.
AVX2_MACHINE = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
ROWS = {
    "native": {"OMP_NUM_THREADS": "1"},
    "native-2-threads": {"OMP_NUM_THREADS": "2"},
    "aten-avx2": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"},
    "aten-default": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default"},
    "onednn-avx2": {"OMP_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl-avx2": {"OMP_NUM_THREADS": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx2-machine": {"OMP_NUM_THREADS": "1", **AVX2_MACHINE},
    "avx2-machine-2-threads": {"OMP_NUM_THREADS": "2", **AVX2_MACHINE},
}
PINNING = (*PORTABLE, "MKL_ENABLE_INSTRUCTIONS", MODE)  # never inherited from this shell


def write_params(root: Path, images: int, size: int) -> Path:
    """params.yaml with the demo's training settings, the data stages writing under `root`."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["acquire"].update(source="synthetic", out=str(root / "raw"), min_size=min(64, size))
    data["acquire"]["synthetic"].update(count=images, size=max(64, size))
    data["lineart"].update(out=str(root / "lineart"), image_size=size, workers=1)
    data["histograms"].update(out=str(root / "histograms.parquet"))
    data["tracking"]["mlflow"] = False
    data["train"].update(device="cpu", log_every=10, checkpoint_every=10_000, sample_every=10_000)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def build_store(params_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage in ("acquire", "preprocess"):
        args = ["--raw", str(params_path.parent / "raw")] if stage == "preprocess" else []
        cli(params_path.parent, [stage, "--params", str(params_path), *args], env)


def cli(cwd: Path, args: list[str], env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "colorization", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"colorization {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stderr


def weights_digest(model_pt: Path) -> str:
    import torch

    state = torch.load(model_pt, weights_only=True)
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def train_row(root: Path, params_path: Path, kind: str, steps: int, row_env: dict, raw: bool) -> dict:
    work = Path(tempfile.mkdtemp(dir=root))
    base = {k: v for k, v in os.environ.items() if k not in PINNING}
    env = {**base, "PYTHONPATH": str(REPO), **row_env}
    if raw:
        env[MODE] = "native"
    log = cli(work, ["train", kind, "--params", str(params_path), "--steps", str(steps)], env)
    rates = [float(r) for r in re.findall(r"\((\d+) img/s\)", log)]
    return {
        "weights": weights_digest(work / "models" / kind / "model.pt"),
        "losses": hashlib.sha256((work / "plots" / "train" / f"{kind}.csv").read_bytes()).hexdigest()[:12],
        "img/s": sum(rates[1:]) / max(1, len(rates) - 1) if rates else float("nan"),  # first: warm-up
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", default="cgan", choices=["cnn", "cgan", "hint"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--raw-env", action="store_true", help="switch the project's pinning off")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpu-repro-") as tmp:
        root = Path(tmp)
        params_path = write_params(root, args.images, args.size)
        build_store(params_path)
        print(f"{args.kind}, {args.steps} steps, pinning {'off' if args.raw_env else 'on'}")
        print("| row | weights | losses | img/s |\n|---|---|---|---|")
        first = None
        for name in args.rows:
            got = train_row(root, params_path, args.kind, args.steps, ROWS[name], args.raw_env)
            first = first or got
            mark = {k: "" if got[k] == first[k] else " (differs)" for k in ("weights", "losses")}
            cells = [name, *(got[k] + mark[k] for k in mark), f"{got['img/s']:.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
