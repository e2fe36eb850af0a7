"""Stage `lineart` (colorization.preprocess): replaces only its own store, resumes from finished
shards, discards stale staging, parallel and serial builds identical.
"""

import json

import pytest

from colorization import preprocess
from colorization.acquire import run_acquire
from colorization.atomic import OUTPUT_MARKER, NotOurFolder
from colorization.config import load_params
from colorization.preprocess import build_preprocess
from tests.unit.test_store import built  # noqa: F401 (a fixture)


def test_preprocess_replaces_its_own_store_even_an_unmarked_earlier_one(tmp_path, built):  # noqa: F811
    out = tmp_path / "processed/lineart"
    assert (out / OUTPUT_MARKER).read_text() == "line-art store\n"
    (out / OUTPUT_MARKER).unlink()  # as the version before the marker left it: index + meta
    build_preprocess(built.acquire.out, built.lineart, built.histograms)
    assert (out / OUTPUT_MARKER).is_file() and json.loads((out / "meta.json").read_text())["count"] == 24


def test_preprocess_refuses_a_folder_it_did_not_write_before_any_work(tmp_path, small_params, monkeypatch):
    params = load_params(small_params)
    run_acquire(params.acquire)
    out = tmp_path / "processed/lineart"
    out.mkdir(parents=True)
    (out / "precious.txt").write_text("mine")
    monkeypatch.setattr(preprocess, "_run_shard", lambda job: pytest.fail("a shard was built"))
    with pytest.raises(NotOurFolder) as err:
        build_preprocess(params.acquire.out, params.lineart, params.histograms)
    assert str(err.value).startswith(f"{out}: not a line-art store folder") and "\n" not in str(err.value)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in out.parent.iterdir()) == ["lineart"]  # no staging, no histograms


def test_a_killed_lineart_run_resumes_from_its_finished_shards(tmp_path, small_params, monkeypatch):
    params = load_params(small_params)
    run_acquire(params.acquire)
    import colorization.preprocess as pre

    done = []
    real = pre._run_shard

    def dies_on_third_shard(job):
        if job[1] == 2:
            raise KeyboardInterrupt("killed")
        done.append(job[1])
        return real(job)

    monkeypatch.setattr(pre, "_run_shard", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        build_preprocess(params.acquire.out, params.lineart, params.histograms)
    assert done == [0, 1]
    assert not (tmp_path / "processed/lineart").exists()  # nothing published half-way
    staging = tmp_path / "processed/.lineart.partial"
    assert json.loads((staging / "shard-00001.ids.json").read_text())

    seen = []
    monkeypatch.setattr(pre, "_run_shard", lambda job: seen.append(job[1]) or real(job))
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    assert seen == [2]  # only the missing shard is computed again
    assert json.loads((tmp_path / "processed/lineart/meta.json").read_text())["count"] == 24


def test_changed_params_discard_a_stale_staging_folder(tmp_path, small_params):
    params = load_params(small_params)
    run_acquire(params.acquire)
    staging = tmp_path / "processed/.lineart.partial"
    staging.mkdir(parents=True)
    (staging / "fingerprint").write_text("other params")
    (staging / "shard-00000.ids.json").write_text("[]")
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    assert not staging.exists()
    assert json.loads((tmp_path / "processed/lineart/shard-00000.ids.json").read_text()) != []


def test_parallel_and_serial_builds_are_identical(tmp_path, small_params):
    params = load_params(small_params)
    run_acquire(params.acquire)
    serial = build_preprocess(params.acquire.out, params.lineart, params.histograms)
    parallel_params = load_params(small_params, {"lineart.workers": 2, "lineart.out": str(tmp_path / "par")})
    parallel = build_preprocess(
        parallel_params.acquire.out, parallel_params.lineart, parallel_params.histograms
    )
    assert serial["fingerprint"] == parallel["fingerprint"]
    for name in ("shard-00000.color.npy", "shard-00002.lineart.npy", "index.parquet"):
        assert (tmp_path / "processed/lineart" / name).read_bytes() == (tmp_path / "par" / name).read_bytes()
