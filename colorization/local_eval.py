"""How much local hints help, and whether they are obeyed: the evaluation's `local_points` and
`local_obedience` (docs/evaluation.md). Points are nested (the 10 include the 5) and alike for every model."""

from __future__ import annotations

import numpy as np
import torch

from colorization import metrics as m
from colorization.inference import colorize
from colorization.local_hints import reveal
from colorization.models.tensors import rgb_to_target

POINT_COUNTS = (0, 1, 2, 5, 10, 20)
OBEDIENCE_POINTS = 10
NEAR = 30  # levels: a point is obeyed when the output there is this close to its colour


def simulated_points(color: np.ndarray, count: int, seed: int, random_colours: bool = False) -> np.ndarray:
    """Local hints float32 [N, 4, S, S] of `count` points per picture (uint8 [N, S, S, 3]), nested;
    `random_colours`: one-pixel points of uniform random colour."""
    gen = torch.Generator().manual_seed(seed)
    target = rgb_to_target(torch.from_numpy(np.ascontiguousarray(color)).permute(0, 3, 1, 2))
    counts = torch.full((len(color),), count, dtype=torch.long)
    if random_colours:  # a noise picture revealed pixel by pixel: each point its own random colour
        noise = torch.randint(0, 256, target.shape, generator=gen).float() / 127.5 - 1
        return reveal(noise, counts, gen, count, radii=(0,)).numpy()
    return reveal(target, counts, gen, max(POINT_COUNTS)).numpy()


def point_curve(
    generator, lineart, color, hints: dict[str, np.ndarray], seed: int, device, batch_size
) -> dict:
    """Per-image PSNR, SSIM and colourfulness keyed "<hint>/<n>/<metric>" for each global hint given."""
    scores = {}
    for count in POINT_COUNTS:
        local = simulated_points(color, count, seed)
        for name, hint in hints.items():
            out = colorize(generator, lineart, hint, device=device, batch_size=batch_size, local=local)
            scores[f"{name}/{count}/psnr"] = m.psnr(out, color)
            scores[f"{name}/{count}/ssim"] = m.ssim(out, color)
            scores[f"{name}/{count}/colorfulness"] = m.colorfulness(out)
    return scores


def local_obedience(generator, lineart, hints: np.ndarray, seed: int, device, batch_size) -> dict:
    """Per point: distance between its colour and the output's there; and whether within NEAR."""
    n, s = lineart.shape[:2]
    local = simulated_points(np.zeros((n, s, s, 3), np.uint8), OBEDIENCE_POINTS, seed, random_colours=True)
    out = colorize(generator, lineart, hints, device=device, batch_size=batch_size, local=local)
    mask = local[:, 3] > 0  # [N, S, S]
    given = (local[:, :3].transpose(0, 2, 3, 1)[mask] + 1) * 127.5  # [P, 3]
    distance = np.abs(out[mask].astype(np.float64) - given).mean(axis=1)
    return {"distance": distance, "within_30": (distance <= NEAR).astype(np.float64)}
