"""The local copy of registry versions: filled by the first load, checked by the logged md5.

Against a real sqlite registry in a temporary folder; the cache folder is temporary too.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from colorization.atomic import OUTPUT_MARKER
from colorization.colorize import GENERATOR_KINDS, ColorizeError, load_model, parse_palette
from colorization.inference import colorize
from colorization.provenance import file_md5
from colorization.tracking import model_cache, registry
from colorization.tracking.model_cache import CACHE_ENV, entry_dir
from tests.registry_fixtures import NAME, XDOG_RECIPE, register_hint_following_cgan
from tests.unit.test_evaluate import IMAGE_SIZE

CHAMPION_URI = f"models:/{NAME}@champion"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A sqlite registry with v1 of lineart-cgan as champion, and an empty cache folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    register_hint_following_cgan(tmp_path, seed=0, psnr=20.0)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def colours(model) -> np.ndarray:
    lineart = np.full((2, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    lineart[:, 8:24, 16] = 0
    hints = np.stack([parse_palette("#e02020"), parse_palette("#2030e0")])
    return colorize(model.module, lineart, hints, device="cpu")


def no_downloads(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("downloaded from the registry")

    monkeypatch.setattr(registry, "download_model", refuse)


def test_the_first_load_fills_the_cache_with_exactly_the_registered_weights(store, monkeypatch):
    first = load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)
    entry = entry_dir(store / "cache", NAME, "1")
    version = registry.client().get_model_version(NAME, "1")
    trained = file_md5(store / "models-0/cgan/model.pt")
    assert file_md5(entry / "model.pt") == version.tags["model_md5"] == trained

    no_downloads(monkeypatch)
    second = load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)
    assert (second.kind, second.image_size) == (first.kind, first.image_size) == ("cgan", IMAGE_SIZE)
    assert second.recipe == first.recipe == XDOG_RECIPE  # the line-art recipe survives registration
    np.testing.assert_array_equal(colours(second), colours(first))
    by_version = load_model(f"models:/{NAME}/1", "cpu", GENERATOR_KINDS)
    np.testing.assert_array_equal(colours(by_version), colours(first))


def test_a_damaged_entry_is_not_used_and_is_replaced(store, monkeypatch):
    expected = colours(load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS))
    weights = entry_dir(store / "cache", NAME, "1") / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    reloads = []
    real = registry.download_model
    monkeypatch.setattr(registry, "download_model", lambda *a, **k: reloads.append(a) or real(*a, **k))
    np.testing.assert_array_equal(colours(load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)), expected)
    assert len(reloads) == 1
    assert file_md5(weights) == registry.client().get_model_version(NAME, "1").tags["model_md5"]


def test_an_unmarked_entry_of_an_earlier_version_is_replaced(store, monkeypatch):
    load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)
    entry = entry_dir(store / "cache", NAME, "1")
    (entry / OUTPUT_MARKER).unlink()  # as the version before the marker left it: model.pt + config.json
    (entry / "model.pt").write_bytes(b"damaged")
    load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)
    assert (entry / OUTPUT_MARKER).read_text() == "model\n"
    assert file_md5(entry / "model.pt") == registry.client().get_model_version(NAME, "1").tags["model_md5"]


def test_a_folder_the_cache_did_not_write_is_left_alone(store):
    entry = entry_dir(store / "cache", NAME, "1")
    entry.mkdir(parents=True)
    (entry / "precious.txt").write_text("mine")
    model = load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)  # loads through MLflow, caches nothing
    assert model.kind == "cgan"
    assert [p.name for p in entry.iterdir()] == ["precious.txt"] and (
        entry / "precious.txt"
    ).read_text() == "mine"
    assert sorted(p.name for p in entry.parent.iterdir()) == ["1"]  # no staging left beside it


def test_a_moved_alias_loads_the_new_champion(store):
    old = colours(load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS))
    _, registered = register_hint_following_cgan(store, seed=1, psnr=30.0)
    assert registered.promoted and registered.champion == "2"
    new = colours(load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS))
    assert not np.array_equal(new, old)
    assert (entry_dir(store / "cache", NAME, "2") / "model.pt").is_file()


def test_off_or_unwritable_still_loads_a_missing_registry_is_one_line(store, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, "off")
    assert model_cache.cache_root() is None
    load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)
    assert not (store / "cache").exists()

    (store / "a-file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(store / "a-file" / "cache"))  # a cache that cannot be written
    assert load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS).kind == "cgan"

    monkeypatch.setenv(CACHE_ENV, str(store / "cache"))
    load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)
    assert (entry_dir(store / "cache", NAME, "1") / "model.pt").is_file()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with pytest.raises(ColorizeError, match="no MLflow registry"):
        load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)  # a cached entry is no answer without its registry
