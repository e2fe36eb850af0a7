"""Inference contract: numpy in, numpy out, normalisation handled here; "c-GAN with auto color hint"
is `colorize(g, x, predict_hint(h, x))`. On a GPU the networks run as they train there (bf16
autocast, channels_last); on the CPU in fp32."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from colorization.device import autocast, memory_format
from colorization.histogram import HIST_BINS, bin_centers, heaviest_bins
from colorization.local_hints import LOCAL_PLANES
from colorization.models.tensors import lineart_to_input, output_to_rgb


def _ready(model: nn.Module, device: str | torch.device | None) -> tuple[nn.Module, torch.device, object]:
    """`model` in eval mode on `device` (default: where its weights are), the device, its memory format."""
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
    device = torch.device(device)
    fmt = memory_format(device)
    return model.to(device, memory_format=fmt).eval(), device, fmt


@torch.inference_mode()
def colorize(
    generator: nn.Module,
    lineart: np.ndarray,
    hint: np.ndarray,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    local: np.ndarray | None = None,
) -> np.ndarray:
    """Colour line art uint8 [N, S, S] (0 = line) with a hint float32 [N, 512] per image, and `local`
    hints float32 [N, 4, S, S] (None or all-zero: none); returns RGB uint8 [N, S, S, 3]."""
    if lineart.dtype != np.uint8 or lineart.ndim != 3:
        raise ValueError(f"line art must be uint8 [N, S, S], got {lineart.dtype} {lineart.shape}")
    hint = np.asarray(hint, dtype=np.float32)
    if hint.shape != (len(lineart), HIST_BINS):
        raise ValueError(f"hint must be float32 [{len(lineart)}, {HIST_BINS}], got {hint.shape}")
    if local is not None:
        local = np.asarray(local, dtype=np.float32)
        n, s = lineart.shape[:2]
        if local.shape != (n, LOCAL_PLANES, s, s):
            raise ValueError(
                f"local hints must be float32 [{n}, {LOCAL_PLANES}, {s}, {s}], got {local.shape}"
            )
        if not local[:, 3].any():
            local = None
        elif not takes_local_hints(generator):
            raise ValueError(
                "this model was trained without local hints (dots, strokes, a hint layer): "
                "retrain it or leave them out"
            )
    generator, device, fmt = _ready(generator, device)
    out = np.empty((*lineart.shape, 3), np.uint8)
    for start in range(0, len(lineart), batch_size):
        stop = start + batch_size
        x = lineart_to_input(torch.from_numpy(np.ascontiguousarray(lineart[start:stop])).to(device))
        h = torch.tensor(hint[start:stop], device=device)  # a copy: hints may be read-only views
        args = () if local is None else (torch.tensor(local[start:stop], device=device),)
        with autocast(device):
            y = generator(x.contiguous(memory_format=fmt), h, *args)
        out[start:stop] = output_to_rgb(y).cpu().numpy()
    return out


def takes_local_hints(generator: nn.Module) -> bool:
    return bool(getattr(generator, "local_hints", False))


@torch.inference_mode()
def predict_hint(
    hint_model: nn.Module,
    lineart: np.ndarray,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    raw: bool = False,
) -> np.ndarray:
    """The auto colour hint float32 [N, 512] (rows sum to 1): the hint model's guess shrunk towards the
    average hint (`automatic_hint`); `raw=True` gives the guess itself (what the hint metrics score)."""
    if lineart.dtype != np.uint8 or lineart.ndim != 3:
        raise ValueError(f"line art must be uint8 [N, S, S], got {lineart.dtype} {lineart.shape}")
    hint_model, device, fmt = _ready(hint_model, device)
    out = np.empty((len(lineart), HIST_BINS), np.float32)
    for start in range(0, len(lineart), batch_size):
        stop = start + batch_size
        x = lineart_to_input(torch.from_numpy(np.ascontiguousarray(lineart[start:stop])).to(device))
        with autocast(device):
            logits = hint_model(x.contiguous(memory_format=fmt))
        guess = torch.softmax(logits.float(), dim=1)
        out[start:stop] = (guess if raw else automatic_hint(hint_model, guess)).cpu().numpy()
    return out


def automatic_hint(hint_model: nn.Module, guess: torch.Tensor) -> torch.Tensor:
    """The guess shrunk as the model says (`HintNet.automatic`); any other hint network's, unchanged."""
    shrink = getattr(hint_model, "automatic", None)
    return guess if shrink is None else shrink(guess)


def palette(hint: np.ndarray, size: int, mass: float = 0.98, max_colours: int = 16) -> np.ndarray:
    """A hint drawn as colour stripes (height by weight): uint8 [size, size, 3]."""
    keep = heaviest_bins(hint, max_colours, mass)
    weights = hint[keep] / max(float(hint[keep].sum()), 1e-8)
    edges = np.round(np.concatenate([[0.0], np.cumsum(weights)]) * size).astype(int)
    image = np.zeros((size, size, 3), np.uint8)
    for colour, top, bottom in zip(bin_centers()[keep], edges[:-1], edges[1:], strict=True):
        image[top:bottom] = colour
    return image


def sample_grid(columns: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Rows of images from columns of uint8 [N, S, S, 3] (or [N, S, S] grey) with white gaps."""
    cols = [np.repeat(c[..., None], 3, axis=3) if c.ndim == 3 else c for c in columns]
    n, s = cols[0].shape[:2]
    grid = np.full((n * (s + gap) - gap, len(cols) * (s + gap) - gap, 3), 255, np.uint8)
    for j, col in enumerate(cols):
        for i in range(n):
            grid[i * (s + gap) : i * (s + gap) + s, j * (s + gap) : j * (s + gap) + s] = col[i]
    return grid
