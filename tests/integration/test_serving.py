"""MLflow's own serving: `mlflow models serve -m models:/lineart-cgan@champion --env-manager local`.

A tiny c-GAN that follows its hint's colour is logged exactly as training logs it
(TrainingRun.log_model: the models/cgan folder as a pyfunc, with its signature), registered
and made champion in a temporary sqlite registry; the real `mlflow models serve` then colours
through `/invocations` with the request docs/serving.md shows, and sheds load past
`UVICORN_LIMIT_CONCURRENCY` with a 503 at once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests

from colorization.colorize import fit_input, parse_palette
from colorization.config import DEFAULT_RECIPE
from colorization.inference import colorize
from colorization.tracking.registry import CHAMPION
from tests.registry_fixtures import NAME, register_hint_following_cgan
from tests.servers import free_port, stop_group
from tests.unit.test_colorize import drawing
from tests.unit.test_evaluate import IMAGE_SIZE

MLFLOW = Path(sys.executable).with_name("mlflow")


def serve(
    model_uri: str, tracking: str, log: Path, attempts: int = 3, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen]:
    """`mlflow models serve` on a free 127.0.0.1 port, ready when `/ping` answers 200.

    The free port can be taken between choosing and binding it: a server that exits before
    it is ready is retried on a fresh port.
    """
    # MLflow starts `uvicorn` by name: the venv's bin must be on PATH, as `make test` has it.
    path = os.pathsep.join([str(MLFLOW.parent), os.environ.get("PATH", "")])
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking, "PATH": path} | (env or {})
    for attempt in range(attempts):
        port = free_port()
        cmd = [str(MLFLOW), "models", "serve", "-m", model_uri, "--env-manager", "local"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        with log.open("w") as out:
            # Its own session: the server forks workers, and stopping must reach them too.
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    return url, proc
            except requests.RequestException:
                pass
            time.sleep(0.5)  # polling interval, not a wait for readiness
        stop_group(proc)
        if attempt + 1 == attempts or "address already in use" not in log.read_text().lower():
            break
    raise RuntimeError(f"`mlflow models serve` did not become ready:\n{log.read_text()[-3000:]}")


@contextmanager
def held_connections(url: str, count: int) -> Iterator[None]:
    """`count` clients connected, in the middle of a request: uvicorn counts each connection
    from its accept, and times out only idle ones between requests, never these."""
    host, port = url.removeprefix("http://").split(":")
    with ExitStack() as held:
        for _ in range(count):
            conn = held.enter_context(socket.create_connection((host, int(port)), timeout=30))
            conn.sendall(b"POST /invocations HTTP/1.1\r\n")
        yield


@pytest.mark.slow
def test_mlflow_models_serve_colours_through_invocations(tmp_path, monkeypatch):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    net, registered = register_hint_following_cgan(tmp_path)
    assert registered.champion == registered.version == "1"
    signature = mlflow.models.get_model_info(f"models:/{NAME}@{CHAMPION}").signature
    inputs = {spec.name: spec.shape for spec in signature.inputs.inputs}
    assert inputs == {"lineart": (-1, IMAGE_SIZE, IMAGE_SIZE), "hint": (-1, 512)}
    assert signature.outputs.inputs[0].shape == (-1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert {p.name: p.default for p in signature.params.params} == {"local": []}  # optional

    lineart = fit_input(drawing(48, 64), IMAGE_SIZE, DEFAULT_RECIPE).lineart
    linearts = np.stack([lineart, lineart])
    hints = np.stack([parse_palette("#e02020"), parse_palette("#2030e0")])
    body = {"inputs": {"lineart": linearts.tolist(), "hint": hints.tolist()}}  # docs/serving.md's request
    local = np.zeros((2, 4, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    local[1, :, 5, 6] = (1.0, -1.0, -1.0, 1.0)  # a red dot on the blue-hinted picture
    dotted = body | {"params": {"local": local.ravel().tolist()}}

    limit = {"UVICORN_LIMIT_CONCURRENCY": "3"}  # the README's load shedding: 3 connections at most
    url, proc = serve(f"models:/{NAME}@{CHAMPION}", tracking, tmp_path / "serve.log", env=limit)
    try:
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        with_dot = requests.post(f"{url}/invocations", json=dotted, timeout=60)
        with held_connections(url, 2):  # two clients connected: a third request is one too many
            shed = requests.post(f"{url}/invocations", json=body, timeout=60)
    finally:
        stop_group(proc)
        mlflow.set_tracking_uri(None)  # the global URI registry.client() set: not for later tests
    assert shed.status_code == 503, shed.text[:200]
    assert answer.status_code == 200, answer.text
    rgb = np.asarray(answer.json()["predictions"], np.float64)
    assert rgb.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    expected = colorize(net, linearts, hints)
    np.testing.assert_allclose(rgb, expected, atol=1.0)  # the champion's weights, not another model's
    redness = (rgb[..., 0] - rgb[..., 2]).mean(axis=(1, 2))
    assert redness[0] > redness[1] + 50, redness  # coloured, and by the hint each row carried
    assert with_dot.status_code == 200, with_dot.text
    dot = np.asarray(with_dot.json()["predictions"], np.float64)
    np.testing.assert_allclose(dot, colorize(net, linearts, hints, local=local), atol=1.0)
    assert dot[1, 5, 6, 0] > dot[1, 5, 6, 2] + 100 and rgb[1, 5, 6, 0] < rgb[1, 5, 6, 2]  # red where dotted
