"""CPU training gives the same bits on another x86 machine (issue 26, item 5), in child processes.

Another machine is emulated on this one: PyTorch's generic kernels instead of its AVX2/AVX-512
ones (ATEN_CPU_CAPABILITY), oneDNN's AVX2 convolutions instead of AVX-512 ones where the CPU
has them (ONEDNN_MAX_CPU_ISA) and another core count (OMP_NUM_THREADS). Without the project's
pinning (colorization/cpu_kernels.py), or without any one of those three pins, the two CLI
trainings of the demo's c-GAN end a few ulps apart after 3 steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from colorization import cpu_kernels
from tests.conftest import built_synthetic_store, write_params
from tests.servers import HUNG_S

# What a machine's own environment may hold; the test sets it per emulated machine.
MACHINE_VARIABLES = (*cpu_kernels.PORTABLE, "MKL_ENABLE_INSTRUCTIONS", cpu_kernels.MODE)


THIS_MACHINE = {"OMP_NUM_THREADS": "1"}


OTHER_MACHINE = {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def train_as(machine: dict, store_params: Path, work: Path) -> dict[str, torch.Tensor]:
    work.mkdir()
    # The demo's own c-GAN (params.yaml) at 64 px: tiny networks are too small to split across threads.
    write_params(work / "params.yaml", store_params, {"tracking.mlflow": False, "train.cgan.steps": 3})
    env = {k: v for k, v in os.environ.items() if k not in MACHINE_VARIABLES} | machine
    cmd = [sys.executable, "-m", "colorization", "train", "cgan", "--params", "params.yaml"]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=HUNG_S)
    assert done.returncode == 0, done.stderr
    return torch.load(work / "models" / "cgan" / "model.pt", weights_only=True)


def test_another_machine_trains_the_same_weights(tmp_path: Path):
    store_params = built_synthetic_store(tmp_path, count=40, image_size=64)
    here = train_as(THIS_MACHINE, store_params, tmp_path / "here")
    there = train_as(OTHER_MACHINE, store_params, tmp_path / "there")
    assert here.keys() == there.keys()
    assert all(torch.equal(here[k], there[k]) for k in here), [
        k for k in here if not torch.equal(here[k], there[k])
    ]


def test_an_unknown_mode_stops_the_cli_in_one_line(tmp_path: Path):
    env = {**os.environ, cpu_kernels.MODE: "fast"}
    cmd = [sys.executable, "-m", "colorization", "train", "cgan", "--params", "missing.yaml"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_S)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: COLORIZATION_CPU_KERNELS='fast'; expected portable or native"
    assert list(tmp_path.iterdir()) == []
