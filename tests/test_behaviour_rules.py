"""Behaviour of the rules, checked against hand-computed expectations: the resize rule, the
promotion rule (strict improvement only), Retry-After pausing every download thread.

Each test here was seen to fail on a deliberately broken version of the code it guards
(see bench/MUTATION.md, "Behaviour tests and the broken versions they catch").
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from colorization.lineart import prepare_pair, resize_square
from colorization.sources.polite_http import HostAllowList, PoliteSession, RetryPolicy
from colorization.tracking.registry import CHAMPION, decide_promotion
from tests.fake_safebooru import FakeSafebooru, Fault

# ---------------------------------------------------------------- the resize rule


def row_bands(height: int, width: int) -> np.ndarray:
    """RGB whose row i is grey level (i // 2) * 10: every 2 x 2 block is flat, so halving it
    with area averaging is exact and the expected pixels can be written down by hand."""
    levels = (np.arange(height) // 2 * 10).astype(np.uint8)
    return np.repeat(np.repeat(levels[:, None, None], width, axis=1), 3, axis=2)


def test_center_crop_scales_the_shorter_side_then_cuts_the_middle():
    tall = row_bands(40, 20)  # 40 rows x 20 columns -> scale 1/2 -> 20 x 10 -> rows 5..14 kept
    out = resize_square(tall, 10, "center_crop")
    assert out.shape == (10, 10, 3)
    expected_rows = np.arange(5, 15) * 10  # row r of the halved image is grey r * 10
    np.testing.assert_array_equal(out[:, :, 0], np.repeat(expected_rows[:, None], 10, axis=1))
    # A stretch (40 x 20 squeezed to 10 x 10) would give rows 5, 25, ..., 185: not a crop.


def test_center_crop_of_a_wide_picture_keeps_its_middle_columns():
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = 255  # a white band on the left quarter only
    out = resize_square(wide, 10, "center_crop")  # scale 1/2 -> 10 x 20, columns 5..14 kept
    assert out.shape == (10, 10, 3)
    np.testing.assert_array_equal(out, np.zeros((10, 10, 3), np.uint8))  # the band was cut away


def test_pad_scales_the_longer_side_and_pads_with_white_evenly():
    wide = np.full((20, 40, 3), 50, np.uint8)  # scale 1/4 -> 5 rows x 10 columns, 5 rows of paper
    out = resize_square(wide, 10, "pad")
    assert out.shape == (10, 10, 3)
    assert (out[:2] == 255).all() and (out[2:7] == 50).all() and (out[7:] == 255).all()


def test_a_training_pair_is_the_cropped_picture_and_its_lines(params_dict):
    from colorization.config import LineartParams

    params = LineartParams.model_validate(
        {**params_dict["lineart"], "image_size": 16, "resize": "center_crop"}
    )
    color, lines = prepare_pair(row_bands(64, 32), params)  # halved to 32 x 16: rows 8..23 kept
    expected_rows = np.arange(8, 24) * 10
    np.testing.assert_array_equal(color[:, :, 1], np.repeat(expected_rows[:, None], 16, axis=1))
    assert lines.shape == (16, 16) and lines.dtype == np.uint8


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


# ---------------------------------------------------------------- Retry-After, every thread


class StoppedClock:
    """A clock that never moves; each thread's sleeps are recorded, none is slept."""

    def __init__(self) -> None:
        self.sleeps: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def now(self) -> float:
        return 500.0

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.setdefault(threading.current_thread().name, []).append(seconds)


def test_retry_after_told_to_one_thread_pauses_every_download_thread():
    clock = StoppedClock()
    with FakeSafebooru() as site:
        for post_id in (1, 2, 3):
            site.add_post(post_id)
        first, *others = (site.file_path(i) for i in (1, 2, 3))
        site.file_faults[first] = [Fault(status=429, headers={"Retry-After": "30"})]
        session = PoliteSession(
            user_agent="tests",
            timeout_s=30,
            policy=RetryPolicy(max_retries=2, backoff_s=0.001, max_wait_s=60),
            allow=HostAllowList(site.base_url, []),
            clock=clock.now,
            sleep=clock.sleep,
        )

        bodies: dict[str, bytes] = {}

        def download(path: str) -> None:
            bodies[path] = session.get(site.base_url + path, max_bytes=1 << 20).body

        told = threading.Thread(target=download, args=(first,), name="told")
        told.start()
        told.join()
        # Later downloads on other threads, while the clock still reads the moment of the 429.
        for i, path in enumerate(others):
            thread = threading.Thread(target=download, args=(path,), name=f"other-{i}")
            thread.start()
            thread.join()
        session.close()
        # What the client got, and what the server was asked (recorded before it answers).
        assert all(bodies[p] == site.files[p] for p in (first, *others))
        assert [len(site.file_requests(p)) for p in (first, *others)] == [2, 1, 1]
    assert clock.sleeps["told"] == [30.0]
    assert clock.sleeps["other-0"] == [30.0] and clock.sleeps["other-1"] == [30.0], clock.sleeps


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


# ---------------------------------------------------------------- polite_http edges


def polite(site: FakeSafebooru, clock: StoppedClock, **policy) -> PoliteSession:
    values = {"max_retries": 2, "backoff_s": 0.001, "max_wait_s": 60} | policy
    return PoliteSession(
        user_agent="tests",
        timeout_s=30,
        policy=RetryPolicy(**values),
        allow=HostAllowList(site.base_url, []),
        clock=clock.now,
        sleep=clock.sleep,
    )


def test_a_first_answer_waits_for_nothing_and_a_retry_after_of_max_wait_is_honoured():
    clock = StoppedClock()
    with FakeSafebooru() as site:
        site.add_post(1)
        path = site.file_path(1)
        session = polite(site, clock, max_wait_s=30)
        assert session.get(site.base_url + path, max_bytes=1 << 20).body == site.files[path]
        assert clock.sleeps == {}, "no pause before a first request"
        site.file_faults[path] = [Fault(status=429, headers={"Retry-After": "30"})]  # = max_wait_s
        assert session.get(site.base_url + path, max_bytes=1 << 20).body == site.files[path]
        session.close()
    assert sum(clock.sleeps.values(), []) == [30.0]


def test_a_retry_after_beyond_max_wait_is_a_failure_worth_retrying_later():
    from colorization.sources.polite_http import FetchError

    with FakeSafebooru() as site:
        site.add_post(1)
        path = site.file_path(1)
        site.file_faults[path] = [Fault(status=429, headers={"Retry-After": "31"})]
        session = polite(site, StoppedClock(), max_wait_s=30)
        with pytest.raises(FetchError, match=r"^HTTP 429: Retry-After 31s exceeds max_wait_s$") as err:
            session.get(site.base_url + path, max_bytes=1 << 20)
        session.close()
    assert err.value.permanent is False


def test_a_body_of_exactly_max_bytes_is_accepted():
    with FakeSafebooru() as site:
        site.add_post(1)
        path = site.file_path(1)
        size = len(site.files[path])
        session = polite(site, StoppedClock())
        assert len(session.get(site.base_url + path, max_bytes=size).body) == size
        session.close()


def test_a_refused_connection_is_named_in_the_failure():
    import socket

    from colorization.sources.polite_http import FetchError

    with socket.socket() as bound:  # bound, never listening: connections are refused at once
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/x"
        session = PoliteSession(
            user_agent="tests",
            timeout_s=30,
            policy=RetryPolicy(max_retries=1, backoff_s=0.001, max_wait_s=1),
            allow=HostAllowList(url, []),
            sleep=lambda s: None,
        )
        with pytest.raises(FetchError, match=r"^ConnectionError: .+ \(gave up after 2 attempts\)$") as err:
            session.get(url, max_bytes=100)
        session.close()
    assert err.value.permanent is False


def test_retry_after_values_and_the_seeded_jitter():
    from datetime import UTC, datetime

    from colorization.sources.polite_http import RateLimiter, retry_after_seconds

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("0", now) == 0.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:10 -0000", now) == 10.0  # no zone: UTC
    import random

    policy = RetryPolicy(max_retries=3, backoff_s=1.0, max_wait_s=60)
    draws = [policy.backoff(2, random.Random(seed)) for seed in range(400)]  # ceiling 4
    assert max(draws) > 3.9 and min(draws) < 2.1  # spread over the whole [ceiling / 2, ceiling]

    def sleeps_of(seed: int) -> list[float]:
        slept: list[float] = []
        session = PoliteSession(
            user_agent="t", timeout_s=1, policy=policy, allow=HostAllowList("http://a", []),
            sleep=slept.append, seed=seed,
        )  # fmt: skip
        for attempt in range(3):
            session.sleep_backoff(attempt)
        return slept

    assert sleeps_of(3) == sleeps_of(3) and sleeps_of(3) != sleeps_of(4)
    never: list[float] = []
    unlimited = RateLimiter(0.0, sleep=never.append)
    for _ in range(3):
        unlimited.acquire()
        unlimited.release()
    assert never == []
