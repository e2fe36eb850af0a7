"""colorization.tracking.registry: the promotion rule (strict improvement only), checked against
hand-computed expectations, and reading the ranking metric.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from colorization.tracking.registry import CHAMPION, decide_promotion

# ---------------------------------------------------------------- the promotion rule


class OneChampion:
    """The part of MlflowClient that `decide_promotion` reads: a champion scored `old`."""

    def __init__(self, old: float, split: str = "s1") -> None:
        self.champion = SimpleNamespace(version="3", tags={"metric.cgan.psnr": str(old), "eval_split": split})

    def get_model_version_by_alias(self, name: str, alias: str):
        assert alias == CHAMPION
        return self.champion


@pytest.mark.parametrize(
    ("direction", "new", "old", "promoted"),
    [
        ("max", 20.5, 20.0, True),
        ("max", 20.0, 20.0, False),  # a tie keeps the champion
        ("max", 19.5, 20.0, False),
        ("min", 0.10, 0.20, True),
        ("min", 0.20, 0.20, False),  # a tie keeps the champion
        ("min", 0.30, 0.20, False),
    ],
)
def test_promotion_only_on_strict_improvement(direction, new, old, promoted):
    decision, why = decide_promotion(OneChampion(old), "m", "cgan.psnr", direction, new, "s1", rescore=None)
    assert decision is promoted, why
    assert why.startswith("promoted" if promoted else "not promoted")


def test_a_tie_with_a_rescored_champion_is_not_a_promotion():
    client = OneChampion(99.0, split="old-split")  # recorded on another split: rescored, scores 20
    decision, why = decide_promotion(
        client, "m", "cgan.psnr", "max", 20.0, "s1", rescore=lambda uri: {"psnr": 20.0}
    )
    assert decision is False and "re-scored" in why
    decision, _ = decide_promotion(
        client, "m", "cgan.psnr", "max", 20.01, "s1", rescore=lambda uri: {"psnr": 20.0}
    )
    assert decision is True


class NoChampion:
    def get_model_version_by_alias(self, name: str, alias: str):
        from mlflow.exceptions import MlflowException

        raise MlflowException(f"no alias {alias} on {name}")


def test_the_first_version_becomes_champion_and_the_reasons_say_why():
    decision, why = decide_promotion(NoChampion(), "m", "cgan.psnr", "max", 12.5, "s1", rescore=None)
    assert decision is True and why == "first champion: no earlier champion (cgan.psnr = 12.5)"

    same = decide_promotion(OneChampion(20.0), "m", "cgan.psnr", "max", 21.0, "s1", rescore=None)
    assert same == (True, "promoted: cgan.psnr 21 > 20 of champion v3 (same test split)")
    higher = decide_promotion(OneChampion(0.3), "m", "cgan.psnr", "min", 0.4, "s1", rescore=None)
    assert higher == (False, "not promoted: cgan.psnr 0.4 does not beat 0.3 of champion v3 (same test split)")
    lower = decide_promotion(OneChampion(0.3), "m", "cgan.psnr", "min", 0.2, "s1", rescore=None)
    assert lower == (True, "promoted: cgan.psnr 0.2 < 0.3 of champion v3 (same test split)")

    asked = []
    rescored = decide_promotion(
        OneChampion(1.0, split="s0"),
        "m",
        "cgan.psnr",
        "max",
        21.0,
        "s1",
        rescore=lambda uri: asked.append(uri) or {"psnr": 20.0},
    )
    assert rescored == (
        True,
        "promoted: cgan.psnr 21 > 20 of champion v3 (champion re-scored on this test split)",
    )
    assert asked == ["models:/m/3"]
    unscored = decide_promotion(
        OneChampion(1.0, split="s0"), "m", "cgan.psnr", "max", 21.0, "s1", rescore=None
    )
    assert unscored == (False, "not promoted: champion v3 was scored on another test split")


def test_the_champion_is_looked_up_by_the_model_name():
    class Named(OneChampion):
        def get_model_version_by_alias(self, name: str, alias: str):
            assert name == "lineart-cgan"
            return super().get_model_version_by_alias(name, alias)

    assert decide_promotion(Named(1.0), "lineart-cgan", "cgan.psnr", "max", 2.0, "s1", rescore=None)[0]


def test_a_metric_is_read_from_its_section_and_a_missing_one_is_named():
    from colorization.tracking.registry import RegistryError, metric_value

    assert metric_value({"cgan": {"psnr": "21.5"}}, "cgan.psnr") == 21.5
    assert metric_value({"obedience": {"cgan.red": 3}}, "obedience.cgan.red") == 3.0  # key may hold dots
    with pytest.raises(
        RegistryError, match=r"^metric cgan\.fid not in the evaluation \(sections: \['cgan', 'hint'\]\)$"
    ):
        metric_value({"hint": {}, "cgan": {"psnr": 1}}, "cgan.fid")
