"""A cached registry load in a fresh process opens no database itself, and skips MLflow while the
store is untouched."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from colorization.colorize import GENERATOR_KINDS, load_model
from tests.registry_fixtures import register_hint_following_cgan
from tests.unit.test_evaluate import IMAGE_SIZE
from tests.unit.test_tracking_model_cache import (
    CHAMPION_URI,
    colours,
    store,  # noqa: F401 (a fixture)
)


def test_a_cached_load_opens_no_database_itself(store):  # noqa: F811
    load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)  # fills the cache
    code = (
        "import sqlite3, sys; from colorization.colorize import load_model, GENERATOR_KINDS; "
        "opened = []; real = sqlite3.connect; "
        "sqlite3.connect = lambda *a, **k: opened.append(sys._getframe(1).f_globals['__name__']) "
        "or real(*a, **k); "
        f"m = load_model({CHAMPION_URI!r}, 'cpu', GENERATOR_KINDS); "
        "print(m.kind, m.image_size, sorted({o.split('.')[0] for o in opened}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[:2] == ["cgan", str(IMAGE_SIZE)], out.stderr[-2000:]
    # The registry is read through MLflow's client (SQLAlchemy opens the file), never by the project.
    assert "colorization" not in out.stdout.split(" ", 2)[2], out.stdout


def test_a_warm_load_from_an_untouched_store_does_not_import_mlflow(store):  # noqa: F811
    """The start-up's floor: once a URI resolved, and while the SQLite store is unchanged, the
    cached version loads without MLflow; a write to the store (the alias moved) asks again."""
    first = colours(load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS))  # resolves through MLflow
    code = (
        "import sys; from colorization.colorize import load_model, GENERATOR_KINDS; "
        f"m = load_model({CHAMPION_URI!r}, 'cpu', GENERATOR_KINDS); "
        "print(m.kind, 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cgan", "False"], out.stderr[-2000:]
    np.testing.assert_array_equal(colours(load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)), first)
    _, registered = register_hint_following_cgan(store, seed=1, psnr=30.0)  # v2 takes the alias
    assert registered.champion == "2"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cgan", "True"], out.stderr[-2000:]  # asked the registry again
    assert not np.array_equal(colours(load_model(CHAMPION_URI, "cpu", GENERATOR_KINDS)), first)
