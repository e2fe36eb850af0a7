"""MLflow's own serving: `mlflow models serve -m models:/lineart-cgan@champion --env-manager local`.

A tiny c-GAN that follows its hint's colour is logged exactly as training logs it
(TrainingRun.log_model: the models/cgan folder as a pyfunc, with its signature), registered
and made champion in a temporary sqlite registry; the real `mlflow models serve` then colours
through `/invocations` with the request docs/serving.md shows, and sheds load past
`UVICORN_LIMIT_CONCURRENCY` with a 503 at once.
"""

from __future__ import annotations

import json
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
import torch

from colorization.colorize import fit_input, parse_palette
from colorization.config import DEFAULT_RECIPE
from colorization.inference import colorize
from colorization.models import build_model, model_config
from colorization.tracking import registry
from colorization.tracking.registry import CHAMPION
from colorization.tracking.runs import TrainingRun
from colorization.tracking.serving import example_input, predict
from tests.servers import free_port, stop_group
from tests.test_colorize import drawing
from tests.test_evaluate import IMAGE_SIZE

MLFLOW = Path(sys.executable).with_name("mlflow")
NAME = "lineart-cgan"
HINT_FOLLOWING = {  # the hint's mean colour as input planes: colours follow the hint even untrained
    "cnn": {"base_channels": 4, "depth": 2, "hint_dim": 8, "hint_planes": True},
    "cgan": {"base_channels": 4, "depth": 3, "hint_dim": 8, "hint_planes": True, "local_hints": True},
}


# A line-art recipe as training records it, other than the built-in one an older model gets.
XDOG_RECIPE = DEFAULT_RECIPE.model_copy(update={"extractor": "xdog"})


def save_hint_following(folder: Path, kind: str = "cgan", seed: int = 0, recipe=None):
    """A models/<kind> folder: a tiny untrained generator whose colours follow its hint's mean."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    net = build_model(kind, HINT_FOLLOWING[kind]).eval()
    torch.save(net.state_dict(), folder / "model.pt")
    config = model_config(kind, HINT_FOLLOWING[kind], IMAGE_SIZE, recipe)
    (folder / "config.json").write_text(json.dumps(config))
    return net


def register_hint_following_cgan(root: Path, seed: int = 0, psnr: float = 20.0):
    """models/cgan as `train` leaves it (weights, config, run.json), logged and registered.

    Returns the network and the Registration (a better `psnr` takes champion)."""
    folder = root / f"models-{seed}" / "cgan"
    net = save_hint_following(folder, seed=seed, recipe=XDOG_RECIPE)
    paper = np.full((2, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    example = example_input("cgan", paper, np.full((2, 512), 1 / 512, np.float32))
    output = predict(net, json.loads((folder / "config.json").read_text()), example)
    run = TrainingRun("serving-test", run_name="train-cgan", tags={"model": "cgan"})
    uri = run.log_model(folder, example, output)
    run.finish()
    (folder / "run.json").write_text(json.dumps({"run_id": run.run_id, "model_uri": uri, "kind": "cgan"}))
    evaluation = {"cgan": {"psnr": psnr}, "split_fingerprint": "test", "split": "test"}
    return net, registry.register_model("cgan", NAME, "cgan.psnr", "max", folder, evaluation, {})


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
