"""The CUDA path, where it runs: bf16 autocast, channels_last, torch.compile, resume from a
checkpoint on the GPU, colorize on the GPU, and a DDP step over NCCL in a world of one.

Every test here is marked `cuda` and skips on a machine without CUDA (CI, a laptop). On the
GPU machine they run with `pytest -m cuda` (bench/gpu_session.sh does that first).
Tiny networks on a 32 px synthetic store, as in test_train.py: seconds each on a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from colorization.augment import DeviceData, sample_batch
from colorization.config import load_params
from colorization.device import memory_format
from colorization.models.steps import cgan_step, cnn_step
from colorization.store import ProcessedStore
from colorization.train import build_nets
from tests.conftest import (
    TINY,
    built_synthetic_store,
    kill_at_first_checkpoint,
    run_folder,
    train_model,
    write_image,
    write_params,
)
from tests.servers import HUNG_S

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")

# test_train.py's tiny networks, on the GPU; batches of 16 and a CNN learning rate at which a
# 150-step run shows its loss falling.
TINY_ON_CUDA = {
    **TINY,
    "train.device": "cuda",
    "train.compile": False,
    "train.cnn.batch_size": 16,
    "train.cnn.lr": 0.002,
    "train.cgan.batch_size": 16,
}


@pytest.fixture(scope="module")
def store_params(tmp_path_factory) -> Path:
    """A params file whose store holds 160 synthetic images at 32 px (built once per module)."""
    return built_synthetic_store(tmp_path_factory.mktemp("store"), count=160, image_size=32)


def cuda_params(path: Path, **overrides):
    return load_params(path, {**TINY_ON_CUDA, **overrides})


def batches(params, kind: str, seed: int = 0):
    """Training batches on the GPU, sampled and augmented as the training loop does."""
    store = ProcessedStore(params.lineart.out, params.histograms.out)
    data = DeviceData.from_split(store.load("train"), CUDA)
    gen = torch.Generator(device=CUDA).manual_seed(seed)
    size = getattr(params.train, kind).batch_size
    while True:
        yield sample_batch(data, size, gen, params.train.augment, memory_format(CUDA))


def test_training_steps_run_in_bf16_on_channels_last_weights(store_params: Path):
    params = cuda_params(store_params)
    nets = build_nets("cgan", params, CUDA)
    for name, module in nets.modules.items():
        for weight in (p for p in module.parameters() if p.dim() == 4):
            assert weight.is_cuda and weight.dtype == torch.float32, name  # fp32 master weights
            assert weight.is_contiguous(memory_format=torch.channels_last), name
    # Every convolution of both networks computes in bf16 inside the step.
    seen: list[torch.dtype] = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        for module in nets.modules.values()
        for m in module.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    losses = cgan_step(nets, next(batches(params, "cgan")), params.train.cgan, CUDA)
    for hook in hooks:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())


def test_training_on_the_gpu_lowers_the_loss(store_params: Path, tmp_path: Path):
    paths = run_folder(tmp_path, "cnn")
    model_dir = train_model(cuda_params(store_params), "cnn", steps=150, **paths)
    loss = np.loadtxt(paths["plots_path"], delimiter=",", skiprows=1)[:, 1]
    assert np.isfinite(loss).all()
    assert loss[-20:].mean() < 0.8 * loss[:20].mean()
    assert (model_dir / "model.pt").exists()


def test_compiled_networks_train_like_eager_ones(store_params: Path):
    eager_params = cuda_params(store_params)
    compiled_params = cuda_params(store_params, **{"train.compile": True})
    torch.manual_seed(0)
    eager = build_nets("cnn", eager_params, CUDA)
    torch.manual_seed(0)
    compiled = build_nets("cnn", compiled_params, CUDA)
    assert compiled.forward["model"] is not compiled.modules["model"]  # really compiled
    data = batches(eager_params, "cnn")
    first = [next(data) for _ in range(30)]
    eager_losses = [cnn_step(eager, b, eager_params.train.cnn, CUDA)["loss"].item() for b in first]
    compiled_losses = [cnn_step(compiled, b, compiled_params.train.cnn, CUDA)["loss"].item() for b in first]
    # Same weights, same batches: the same losses up to bf16 rounding (which Adam's steps carry
    # on, so later steps only stay close), and both fall.
    assert compiled_losses[0] == pytest.approx(eager_losses[0], rel=1e-2)
    assert np.allclose(compiled_losses[:10], eager_losses[:10], rtol=0.1)
    assert np.mean(compiled_losses[-5:]) < np.mean(compiled_losses[:5])


def test_a_run_killed_on_the_gpu_resumes_from_its_checkpoint(store_params: Path, tmp_path: Path):
    steps = 40
    reference = run_folder(tmp_path, "reference")
    train_model(cuda_params(store_params), "cgan", steps=steps, **reference)

    work = tmp_path / "killed"
    work.mkdir()
    write_params(work / "params.yaml", store_params, {**TINY_ON_CUDA, "train.cgan.steps": steps})
    cmd = [sys.executable, "-m", "colorization", "train", "cgan", "--params", "params.yaml"]
    kill_at_first_checkpoint(cmd[3:], work)
    checkpoint = work / "checkpoints" / "cgan" / "last.pt"
    assert torch.load(checkpoint, weights_only=True, map_location="cpu")["step"] == 10
    (work / "plots" / "train" / "cgan.csv").unlink()  # as `dvc repro` does before re-running the stage

    resumed = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=HUNG_S)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming cgan from step 10" in resumed.stderr
    assert not checkpoint.exists()
    rows = np.loadtxt(work / "plots" / "train" / "cgan.csv", delimiter=",", skiprows=1)
    assert rows[:, 0].tolist() == list(range(1, steps + 1))  # every step once
    ref = np.loadtxt(reference["plots_path"], delimiter=",", skiprows=1)
    # GPU kernels are not bit-exact run to run, but the resumed run continues the same one:
    # its first step after the checkpoint matches the uninterrupted run's to bf16 rounding.
    assert rows[10, 1:] == pytest.approx(ref[10, 1:], rel=0.02, abs=1e-3)


def test_colorize_on_the_gpu_matches_the_cpu(store_params: Path, tmp_path: Path):
    model = train_model(cuda_params(store_params), "cgan", steps=100, **run_folder(tmp_path, "cgan"))
    rng = np.random.default_rng(0)
    drawing = np.full((96, 80, 3), 255, np.uint8)
    drawing[rng.integers(0, 96, 300), rng.integers(0, 80, 300)] = 0
    source = write_image(tmp_path / "in" / "drawing.png", drawing)
    outputs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.png"
        cmd = [sys.executable, "-m", "colorization", "colorize", str(source), "--out", str(out)]
        cmd += ["--model", str(model), "--palette", "#d04030:2,#3050c0:1", "--device", device]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=HUNG_S)
        assert done.returncode == 0, done.stderr
        outputs[device] = cv2.imread(str(out)).astype(np.int16)
    diff = np.abs(outputs["cpu"] - outputs["cuda"])
    assert outputs["cuda"].shape == (96, 80, 3)
    assert diff.mean() < 3 and np.percentile(diff, 99) < 16  # bf16 / TF32 rounding, nothing more


def test_one_ddp_rank_trains_over_nccl(store_params: Path, tmp_path: Path):
    write_params(tmp_path / "params.yaml", store_params, TINY_ON_CUDA)
    # torch.distributed.run is torchrun; NCCL_DEBUG=INFO makes NCCL say it set up the group.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += ["-m", "colorization", "-v", "train", "cnn", "--params", "params.yaml", "--steps", "5"]
    env = {**os.environ, "NCCL_DEBUG": "INFO"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_S)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "rank 0 of 1" in output
    assert "NCCL INFO" in output, output[-4000:]
    assert (tmp_path / "models" / "cnn" / "model.pt").exists()
    rows = (tmp_path / "plots" / "train" / "cnn.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4", "5"]
