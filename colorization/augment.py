"""Training data on the device: the split as uint8 tensors, batches sampled and augmented with
batched tensor ops, all randomness from one seeded `torch.Generator` (a resumed run draws the same
batches). Recolouring and hint blending (generators only): docs/training.md."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from colorization.config import AugmentParams, XDoGParams
from colorization.histogram import torch_histograms
from colorization.local_hints import point_counts, reveal
from colorization.models.steps import Batch
from colorization.models.tensors import lineart_to_input, output_to_levels, rgb_to_target
from colorization.store import Split


@dataclass
class DeviceData:
    color: torch.Tensor  # uint8 [N, 3, S, S]
    lineart: torch.Tensor  # uint8 [N, 1, S, S], 0 = line
    hint: torch.Tensor  # float32 [N, 512]

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> DeviceData:
        # Moved once as uint8 (4x smaller than float); converted per batch on the device.
        color = torch.from_numpy(split.color).to(device).permute(0, 3, 1, 2).contiguous()
        lineart = torch.from_numpy(split.lineart).to(device)[:, None]
        return cls(color=color, lineart=lineart, hint=torch.from_numpy(split.hint).to(device))

    def __len__(self) -> int:
        return self.color.shape[0]

    def mean_hint(self) -> torch.Tensor:  # float32 [512]: the hint that says nothing
        return self.hint.float().mean(dim=0)


def sample_batch(
    data: DeviceData,
    batch_size: int,
    gen: torch.Generator,
    cfg: AugmentParams,
    memory_format: torch.memory_format = torch.contiguous_format,
    recolour: bool = False,
    mean_hint: torch.Tensor | None = None,
    xdog: XDoGParams | None = None,
    local_hints: bool = False,
) -> Batch:
    """A random batch, augmented; `recolour` (generators): recolouring and hint blending; `local_hints`:
    local hints revealed from the final (cropped, recoloured) target."""
    idx = torch.randint(len(data), (batch_size,), generator=gen, device=gen.device)
    color, lineart = augment(data.color[idx], data.lineart[idx], gen, cfg, xdog)
    hint, certainty = data.hint[idx].float(), None
    if recolour:
        mean_hint = data.mean_hint() if mean_hint is None else mean_hint
        color, hint, certainty = recolour_batch(color, hint, gen, cfg, mean_hint)
    local = None
    if local_hints:
        counts = point_counts(batch_size, gen, cfg.local_points_max, cfg.local_none_p)
        local = reveal(color, counts, gen, cfg.local_points_max).contiguous(memory_format=memory_format)
    lineart, color = (x.contiguous(memory_format=memory_format) for x in (lineart, color))
    return Batch(lineart=lineart, color=color, hint=hint, certainty=certainty, local=local)


# RGB -> YIQ: Y is luma, (I, Q) the chroma plane; rotating (I, Q) turns the hue, scaling it the
# saturation, and luma (so the shading the lines imply) stays as it was.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_matrices(angle: torch.Tensor, saturation: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] RGB -> RGB matrices turning the hue by `angle` (radians) and scaling chroma."""
    cos, sin = torch.cos(angle) * saturation, torch.sin(angle) * saturation
    chroma = torch.zeros(angle.shape[0], 3, 3, device=angle.device)
    chroma[:, 0, 0] = 1.0
    chroma[:, 1, 1], chroma[:, 1, 2], chroma[:, 2, 1], chroma[:, 2, 2] = cos, -sin, sin, cos
    to_yiq = _RGB_TO_YIQ.to(angle.device)
    return torch.linalg.inv(to_yiq) @ chroma @ to_yiq


def histograms(color: torch.Tensor) -> torch.Tensor:
    """The 512-bin hint of float pictures [B, 3, S, S] in [-1, 1], as the stored uint8 pictures give."""
    return torch_histograms(output_to_levels(color))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur [B, 1, H, W] with a per-image sigma [B] (separable, reflected borders as OpenCV's)."""
    b = x.shape[0]
    radius = max(1, math.ceil(4 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, K]
    y = F.pad(x.transpose(0, 1), (radius, radius, radius, radius), mode="reflect")  # [1, B, H', W']
    y = F.conv2d(y, kernel[:, None, None, :], groups=b)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b)
    return y.transpose(0, 1)


def xdog_lines(
    color: torch.Tensor, sigma: torch.Tensor, k: float, tau: float, epsilon: float, phi: float
) -> torch.Tensor:
    """`colorization.lineart.xdog` on float pictures [B, 3, S, S] in [-1, 1]: lines [B, 1, S, S] in
    [0, 1], 0 = line, per-image sigma [B]."""
    luma = torch.tensor([0.299, 0.587, 0.114], device=color.device, dtype=color.dtype)
    gray = ((color + 1) / 2 * luma[None, :, None, None]).sum(dim=1, keepdim=True)
    d = gaussian_blur(gray, sigma) - tau * gaussian_blur(gray, sigma * k)
    out = torch.where(d >= epsilon, torch.ones_like(d), 1.0 + torch.tanh(phi * (d - epsilon)))
    return out.clamp(0.0, 1.0)


def recolour_batch(
    color: torch.Tensor, hint: torch.Tensor, gen: torch.Generator, cfg: AugmentParams, mean_hint: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recolour a `cfg.recolour_p` share (new hints from the new colours), blend a `cfg.hint_blend_p` share
    of the others' hints with `mean_hint`; also each hint's certainty (its own share, 1 unless blended)."""
    b = color.shape[0]
    u = torch.rand(b, 4, generator=gen, device=gen.device)
    recoloured = u[:, 0] < cfg.recolour_p
    angle = (2 * u[:, 1] - 1) * torch.pi
    saturation = 1.0 + (2 * u[:, 2] - 1) * cfg.saturation
    matrices = colour_matrices(angle, saturation)
    rgb01 = (color.float() + 1) / 2
    turned = torch.einsum("bij,bjhw->bihw", matrices, rgb01).clamp(0, 1) * 2 - 1
    color = torch.where(recoloured[:, None, None, None], turned.to(color.dtype), color)
    hint = torch.where(recoloured[:, None], histograms(color), hint)
    # Blend only pictures that kept their real colours: the average hint describes real ones.
    blended = ~recoloured & (u[:, 3] < cfg.hint_blend_p)
    amount = torch.rand(b, generator=gen, device=gen.device)[:, None]
    mixed = amount * hint + (1 - amount) * mean_hint.to(hint)[None]
    certainty = torch.where(blended, amount[:, 0], torch.ones_like(amount[:, 0]))
    return color, torch.where(blended[:, None], mixed, hint), certainty


def augment(
    color: torch.Tensor,
    lineart: torch.Tensor,
    gen: torch.Generator,
    cfg: AugmentParams,
    xdog: XDoGParams | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 colour [B,3,S,S] and line art [B,1,S,S] -> augmented floats in [-1, 1]; with `xdog`, a
    `cfg.xdog_p` share of the line art is drawn anew by XDoG from the colour picture."""
    b = color.shape[0]
    # One draw for every random number of the batch keeps the generator's stream simple.
    u = torch.rand(b, 8, generator=gen, device=gen.device)
    line = (lineart_to_input(lineart) + 1) / 2  # [0, 1], 0 = line
    if cfg.xdog_p > 0 and xdog is not None:
        # Another extractor: XDoG's softer lines, at a random scale, instead of the stored Canny.
        sigma = xdog.sigma * (0.75 + 0.75 * u[:, 7])
        soft = xdog_lines(rgb_to_target(color), sigma, xdog.k, xdog.tau, xdog.epsilon, xdog.phi)
        line = torch.where((u[:, 6] < cfg.xdog_p)[:, None, None, None], soft, line)
    # Thicker lines: a 3x3 min filter grows dark strokes by one pixel.
    thick = -F.max_pool2d(-line, 3, stride=1, padding=1)
    line = torch.where((u[:, 0] < cfg.thicken_p)[:, None, None, None], thick, line)
    # Fainter lines: pencil-grey instead of ink-black, as in scanned sketches.
    darkness = cfg.line_intensity_min + (1 - cfg.line_intensity_min) * u[:, 1]
    line = 1 - (1 - line) * darkness[:, None, None, None]
    # Crop and flip as one affine resampling, applied identically to colour and line art.
    scale = cfg.crop_min + (1 - cfg.crop_min) * u[:, 2]
    shift_x = (2 * u[:, 3] - 1) * (1 - scale)
    shift_y = (2 * u[:, 4] - 1) * (1 - scale)
    flip = torch.where((u[:, 5] < 0.5) & cfg.flip, -1.0, 1.0)
    zero = torch.zeros_like(scale)
    theta = torch.stack([scale * flip, zero, shift_x, zero, scale, shift_y], dim=1).view(b, 2, 3)
    both = torch.cat([rgb_to_target(color), line * 2 - 1], dim=1)
    grid = F.affine_grid(theta, list(both.shape), align_corners=False)
    both = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return both[:, :3], both[:, 3:]
