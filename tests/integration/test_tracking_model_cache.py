"""A cached registry load in a fresh process opens no database itself."""

from __future__ import annotations

import subprocess
import sys

from colorization.colorize import GENERATOR_KINDS, load_model
from tests.unit.test_evaluate import IMAGE_SIZE
from tests.unit.test_tracking_model_cache import (
    CHAMPION_URI,
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
