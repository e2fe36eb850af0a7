"""One spec per model kind: everything that differs between cnn, cgan and hint. Training, evaluation,
the registry and the CLI iterate over `SPECS`; nothing else lists the kinds (docs/training.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from colorization.models.cgan import PatchDiscriminator, UNetGenerator
from colorization.models.cnn import ColorCNN
from colorization.models.hint import HintNet
from colorization.models.steps import cgan_step, cnn_step, hint_step

# The global hints a generator is evaluated with: name -> how the figure and the studio say it. "true" and
# "auto" are the model's own scores; "avg" and "wrong" are controls (a hint saying nothing, another's).
HINT_VARIANTS = {
    "true": "true hint",
    "auto": "automatic hint",
    "avg": "average hint",
    "wrong": "another picture's hint",
}
SCORED_VARIANTS = ("true", "auto")


def method_name(kind: str, variant: str) -> str:
    """The evaluation.json section of generator `kind` coloured with hint `variant`: cgan, cgan_auto_hint."""
    return kind if variant == "true" else f"{kind}_{variant}_hint"


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # also its params section, train.<kind>, and its dvc.yaml stage, train@<kind>
    builders: Mapping[str, type[nn.Module]]  # network name -> class; "model" is the one served
    networks: Callable[[Any], dict[str, dict]]  # its section -> constructor kwargs per network
    step: Callable  # (nets, batch, section, device) -> losses
    losses: tuple[str, ...]  # CSV columns of plots/train/<kind>.csv, the main curve first
    label: str  # how the figure, the studio and the registry name it
    generator: bool  # colours line art from a hint (else: guesses the hint from the lines)
    registered: str  # its registered model's name in MLflow
    ranking: tuple[str, str]  # (evaluation.json metric "<section>.<key>", "max" | "min"): champion rule
    task: str  # the registry's `task` tag
    what: str  # the first line of its registered model's description
    betas: Callable[[Any], tuple[float, float]] = lambda s: (0.9, 0.999)  # Adam's, from the section
    ema_decay: Callable[[Any], float] = lambda s: 0.0  # publish the weights' moving average (0: none)
    local_hints: Callable[[Any], bool] = lambda s: False  # trained with simulated local hints
    hints: tuple[str, ...] = ("true",)  # generators: the HINT_VARIANTS evaluation colours it with
    main: bool = False  # the main colourizer: the figure's local-hint panel is its

    @property
    def evaluated(self) -> tuple[str, ...]:
        """The evaluation.json sections that are this model's own scores (the registry's `test.*`)."""
        if not self.generator:
            return (self.kind,)
        return tuple(method_name(self.kind, v) for v in self.hints if v in SCORED_VARIANTS)


def _generator(section) -> dict:
    return section.model_dump(include={"base_channels", "depth", "hint_dim", "hint_planes", "local_hints"})


SPECS: dict[str, ModelSpec] = {
    spec.kind: spec
    for spec in (
        ModelSpec(
            kind="cnn",
            builders={"model": ColorCNN},
            networks=lambda s: {"model": _generator(s)},
            step=cnn_step,
            losses=("loss",),
            label="CNN",
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
            label="c-GAN",
            generator=True,
            registered="lineart-cgan",
            ranking=("cgan.psnr", "max"),
            task="line-art colorization",
            what="Colours anime line art: a pix2pix-style conditional GAN (U-Net generator, PatchGAN "
            "critic, adversarial + L1 loss), the project's main colourizer.",
            betas=lambda s: (s.beta1, 0.999),  # pix2pix: 0.5
            ema_decay=lambda s: s.ema_decay,
            local_hints=lambda s: s.local_hints,
            hints=("true", "auto", "avg", "wrong"),
            main=True,
        ),
        ModelSpec(
            kind="hint",
            builders={"model": HintNet},
            networks=lambda s: {"model": s.model_dump(include={"base_channels", "depth", "trust"})},
            step=hint_step,
            losses=("kl", "chi2"),
            label="hint model",
            generator=False,
            registered="lineart-hint",
            ranking=("hint.chi2", "min"),
            task="colour-hint prediction",
            what="Guesses the colours of a line art: predicts the colour hint the colourizers take, so "
            "the c-GAN can colour with no hint from the user (`c-GAN, automatic hint` in the studio).",
        ),
    )
}

GENERATOR_KINDS = tuple(kind for kind, spec in SPECS.items() if spec.generator)  # cnn, cgan
HINT_KIND = next(kind for kind, spec in SPECS.items() if not spec.generator)  # makes the automatic hint
MAIN_KIND = next(kind for kind, spec in SPECS.items() if spec.main)  # cgan
GENERATOR_METHODS = {  # evaluation.json section -> (generator kind, hint variant), in SPECS' order
    method_name(kind, variant): (kind, variant) for kind in GENERATOR_KINDS for variant in SPECS[kind].hints
}
