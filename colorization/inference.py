"""Inference contract: numpy in, numpy out; normalisation handled here.

    colorize(generator, lineart uint8[N,S,S], hint float32[N,512], local=None) -> uint8[N,S,S,3]
             (local: float32[N,4,S,S] local hints, colorization/local_hints.py)
    predict_hint(hint_model, lineart uint8[N,S,S]) -> float32[N,512], rows sum to 1
                 (the automatic hint; raw=True: the network's guess before shrinking)

"c-GAN with auto color hint" is `colorize(g, x, predict_hint(h, x))`.
Models come from `colorization.models.load_trained(model_dir)`. On a GPU the networks run as
they train there (bf16 autocast, channels_last); on the CPU in fp32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from colorization.device import autocast, memory_format
from colorization.histogram import HIST_BINS
from colorization.local_hints import LOCAL_PLANES
from colorization.models.tensors import lineart_to_input, output_to_rgb


def _device_of(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_lineart(lineart: np.ndarray) -> None:
    if lineart.dtype != np.uint8 or lineart.ndim != 3:
        raise ValueError(f"line art must be uint8 [N, S, S], got {lineart.dtype} {lineart.shape}")


@torch.inference_mode()
def colorize(
    generator: nn.Module,
    lineart: np.ndarray,
    hint: np.ndarray,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    local: np.ndarray | None = None,
) -> np.ndarray:
    """Colour line art (0 = line) with a colour hint per image; returns RGB uint8 [N, S, S, 3].

    `local`: local hints per image (None or all-zero: none); a generator that takes none
    refuses any. `device` defaults to where the generator's weights are; if given, the
    generator is moved there.
    """
    _check_lineart(lineart)
    hint = np.asarray(hint, dtype=np.float32)
    if hint.shape != (len(lineart), HIST_BINS):
        raise ValueError(f"hint must be float32 [{len(lineart)}, {HIST_BINS}], got {hint.shape}")
    local = check_local(generator, lineart, local)
    device = _device_of(generator, device)
    fmt = memory_format(device)
    generator = generator.to(device, memory_format=fmt).eval()
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


def check_local(generator: nn.Module, lineart: np.ndarray, local: np.ndarray | None) -> np.ndarray | None:
    """The local hints to pass on (None: none given, or all empty), or ValueError (one line)."""
    if local is None:
        return None
    local = np.asarray(local, dtype=np.float32)
    n, s = lineart.shape[:2]
    if local.shape != (n, LOCAL_PLANES, s, s):
        raise ValueError(f"local hints must be float32 [{n}, {LOCAL_PLANES}, {s}, {s}], got {local.shape}")
    if not local[:, 3].any():
        return None
    if not takes_local_hints(generator):
        raise ValueError(
            "this model was trained without local hints (dots, strokes, a hint layer): "
            "retrain it or leave them out"
        )
    return local


@torch.inference_mode()
def predict_hint(
    hint_model: nn.Module,
    lineart: np.ndarray,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    raw: bool = False,
) -> np.ndarray:
    """The auto colour hint: a 512-bin histogram per line art, float32 [N, 512], rows sum to 1.

    It is the hint model's guess shrunk towards the training set's average hint by the model's
    `trust` (models/hint.py); `raw=True` gives the guess itself (what the hint metrics score)."""
    _check_lineart(lineart)
    device = _device_of(hint_model, device)
    fmt = memory_format(device)
    hint_model = hint_model.to(device, memory_format=fmt).eval()
    out = np.empty((len(lineart), HIST_BINS), np.float32)
    for start in range(0, len(lineart), batch_size):
        x = lineart_to_input(
            torch.from_numpy(np.ascontiguousarray(lineart[start : start + batch_size])).to(device)
        )
        with autocast(device):
            logits = hint_model(x.contiguous(memory_format=fmt))
        guess = torch.softmax(logits.float(), dim=1)
        out[start : start + batch_size] = (guess if raw else automatic_hint(hint_model, guess)).cpu().numpy()
    return out


def automatic_hint(hint_model: nn.Module, guess: torch.Tensor) -> torch.Tensor:
    """The model's guess shrunk as the model says (`HintNet.automatic`); any other network that
    maps line art to 512 logits gives its guess unchanged."""
    shrink = getattr(hint_model, "automatic", None)
    return guess if shrink is None else shrink(guess)


def palette(hint: np.ndarray, size: int, mass: float = 0.98, max_colours: int = 16) -> np.ndarray:
    """A hint drawn as colour stripes (height by weight): uint8 [size, size, 3]."""
    from colorization.histogram import bin_centers, heaviest_bins

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
