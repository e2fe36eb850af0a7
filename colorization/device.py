"""Pick the training device and the settings that go with it."""

from __future__ import annotations

import contextlib

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU. Asking for `cuda` on a machine without it is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    return torch.device(requested)


def configure(device: torch.device, seed: int) -> None:
    """Seed, and choose exactness on CPU, speed on GPU."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        # Fast kernels over bit-exactness: TF32 matmuls, cuDNN autotuning.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        # A resumed CPU run must end bit-identical to an uninterrupted one.
        torch.use_deterministic_algorithms(True)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere (CPU bf16 is slower and less exact)."""
    return torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    # NHWC lets cuDNN use tensor-core convolution kernels without transposes.
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format
