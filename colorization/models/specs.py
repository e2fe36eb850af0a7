"""One spec per model kind: everything that differs between cnn, cgan and hint.

Training, evaluation, the registry and the CLI iterate over `SPECS`; nothing else lists
the kinds or branches on a kind's name. A spec names its params section (`train.<kind>`),
the networks it trains (their classes and constructor kwargs, from that section), its
optimisation step and optimiser settings, the loss columns it logs (main curve first), the
evaluation sections scored with it, and its registered model: name, champion rule, and what
the registry page says of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from colorization.models.cgan import PatchDiscriminator, UNetGenerator
from colorization.models.cnn import ColorCNN
from colorization.models.hint import HintNet
from colorization.models.steps import cgan_step, cnn_step, hint_step


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # also its params section, train.<kind>, and its dvc.yaml stage, train@<kind>
    builders: Mapping[str, type[nn.Module]]  # network name -> class; "model" is the one served
    networks: Callable[[Any], dict[str, dict]]  # its section -> constructor kwargs per network
    step: Callable  # (nets, batch, section, device) -> losses
    losses: tuple[str, ...]  # CSV columns of plots/train/<kind>.csv, the main curve first
    evaluated: tuple[str, ...]  # evaluation.json sections scored with this model
    generator: bool  # colours line art from a hint (else: guesses the hint from the lines)
    registered: str  # its registered model's name in MLflow
    ranking: tuple[str, str]  # (evaluation.json metric "<section>.<key>", "max" | "min"): champion rule
    task: str  # the registry's `task` tag
    what: str  # the first line of its registered model's description
    betas: Callable[[Any], tuple[float, float]] = lambda s: (0.9, 0.999)  # Adam's, from the section
    ema_decay: Callable[[Any], float] = lambda s: 0.0  # publish the weights' moving average (0: none)
    local_hints: Callable[[Any], bool] = lambda s: False  # trained with simulated local hints


def _generator(section) -> dict:
    return {
        "base_channels": section.base_channels,
        "depth": section.depth,
        "hint_dim": section.hint_dim,
        "hint_planes": section.hint_planes,
        "local_hints": section.local_hints,
    }


SPECS: dict[str, ModelSpec] = {
    spec.kind: spec
    for spec in (
        ModelSpec(
            kind="cnn",
            builders={"model": ColorCNN},
            networks=lambda s: {"model": _generator(s)},
            step=cnn_step,
            losses=("loss",),
            evaluated=("cnn",),
            generator=True,
            registered="lineart-cnn",
            ranking=("cnn.psnr", "max"),
            task="line-art colorization",
            what="Colours anime line art: the plain CNN baseline (encoder-decoder, L2 loss).",
            local_hints=lambda s: s.local_hints,
        ),
        ModelSpec(
            kind="cgan",
            builders={"model": UNetGenerator, "discriminator": PatchDiscriminator},
            networks=lambda s: {
                "model": _generator(s),
                "discriminator": {"base_channels": s.disc_channels, "layers": s.disc_layers},
            },
            step=cgan_step,
            losses=("d_loss", "g_loss", "g_adv", "g_l1"),
            evaluated=("cgan", "cgan_auto_hint"),
            generator=True,
            registered="lineart-cgan",
            ranking=("cgan.psnr", "max"),
            task="line-art colorization",
            what="Colours anime line art: a pix2pix-style conditional GAN (U-Net generator, PatchGAN "
            "critic, adversarial + L1 loss), the project's main colourizer.",
            betas=lambda s: (s.beta1, 0.999),  # pix2pix: 0.5
            ema_decay=lambda s: s.ema_decay,
            local_hints=lambda s: s.local_hints,
        ),
        ModelSpec(
            kind="hint",
            builders={"model": HintNet},
            networks=lambda s: {"model": {"base_channels": s.base_channels, "depth": s.depth, "trust": s.trust}},
            step=hint_step,
            losses=("kl", "chi2"),
            evaluated=("hint",),
            generator=False,
            registered="lineart-hint",
            ranking=("hint.chi2", "min"),
            task="colour-hint prediction",
            what="Guesses the colours of a line art: predicts the colour hint the colourizers take, so "
            "the c-GAN can colour with no hint from the user (`c-GAN, automatic hint` in the studio).",
        ),
    )
}
