"""The MLflow registry: registering, promotion, idempotency, loading by URI, and a real server.

Models are logged exactly as training logs them (TrainingRun.log_model: the models/<kind>
folder as a pyfunc) into temporary stores, never the project's mlflow.db.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import requests
from typer.testing import CliRunner

from colorization.cli import app
from colorization.config import StageInputs, load_params
from colorization.evaluate import load_models, load_split
from colorization.inference import colorize, predict_hint
from colorization.register import run_register
from colorization.tracking import model_cache, registry
from colorization.tracking.registry import CHALLENGER, CHAMPION, RegistryError
from tests.registry_fixtures import EXPERIMENT, evaluate_project, log_toy_model
from tests.servers import stop_group, uvicorn_port, wait_healthy
from tests.unit.test_evaluate import IMAGE_SIZE, build_project, save_model_dir

MLFLOW = Path(sys.executable).with_name("mlflow")


def register_project(params, **inputs) -> list:
    """The register stage on the project's own outputs (or the `inputs` given instead)."""
    return run_register(params, StageInputs.of(params, **inputs))


def evaluation_of(params_file: Path) -> dict:
    return json.loads(Path(load_params(params_file).evaluate.metrics).read_text())


def test_register_all_then_rerun_adds_nothing(sqlite_store):
    params = load_params(sqlite_store)
    first = register_project(params)
    assert [(r.name, r.version, r.registered, r.champion) for r in first] == [
        (name, "1", True, "1") for name in ("lineart-cnn", "lineart-cgan", "lineart-hint")
    ]
    client = registry.client()
    version = client.get_model_version_by_alias("lineart-cgan", CHAMPION)
    tags = version.tags
    assert (
        tags["source_run_id"] == json.loads((Path(params.train.out) / "cgan/run.json").read_text())["run_id"]
    )
    assert tags["git_commit"] and tags["data_md5"] and len(tags["model_md5"]) == 32
    assert json.loads(tags["params"])["train"]["cgan"]["depth"] == params.train.cgan.depth
    assert json.loads(tags["config"])["image_size"] == IMAGE_SIZE
    assert tags["promotion"].startswith("first champion")
    assert float(tags["metric.cgan.psnr"]) == evaluation_of(sqlite_store)["cgan"]["psnr"]
    recorded = json.loads(Path(params.registry.out).read_text())
    assert recorded["lineart-hint"]["champion"] == "1"

    again = register_project(params)
    assert [r.registered for r in again] == [False, False, False]
    assert "already registered as v1" in again[1].reason
    assert len(client.search_model_versions("name='lineart-cgan'")) == 1


def test_a_worse_version_stays_challenger_a_better_one_takes_champion(sqlite_store, tmp_path):
    evaluation = evaluation_of(sqlite_store)
    models = tmp_path / "models"
    name = "promotion-cgan"

    def register(seed: int, psnr: float):
        log_toy_model(models, "cgan", seed=seed)
        scores = {**evaluation, "cgan": {**evaluation["cgan"], "psnr": psnr}}
        return registry.register_model("cgan", name, "cgan.psnr", "max", models / "cgan", scores, {})

    assert register(1, 20.0).promoted
    worse = register(2, 19.0)
    assert (worse.version, worse.promoted, worse.champion, worse.challenger) == ("2", False, "1", "2")
    assert "does not beat 20 of champion v1" in worse.reason
    client = registry.client()
    assert client.get_model_version(name, "2").tags["promotion"] == worse.reason
    better = register(3, 21.5)
    assert (better.promoted, better.champion, better.challenger) == (True, "3", None)
    assert "21.5 > 20 of champion v1 (same test split)" in better.reason


def test_a_champion_scored_on_another_split_is_rescored(sqlite_store, tmp_path):
    evaluation = evaluation_of(sqlite_store)
    models, name = tmp_path / "models", "rescore-hint"
    log_toy_model(models, "hint", seed=1)
    registry.register_model("hint", name, "hint.chi2", "min", models / "hint", evaluation, {})
    log_toy_model(models, "hint", seed=2)
    new_split = {**evaluation, "split_fingerprint": "another-split", "hint": {"chi2": 0.5, "kl": 1.0}}
    asked = []

    def rescore(uri: str) -> dict:
        asked.append(uri)
        return {"chi2": 0.4, "kl": 0.9}

    result = registry.register_model(
        "hint", name, "hint.chi2", "min", models / "hint", new_split, {}, rescore
    )
    assert asked == [f"models:/{name}/1"]
    assert not result.promoted and "re-scored on this test split" in result.reason


def test_run_register_rescores_the_real_champion_when_the_test_split_changed(sqlite_store, tmp_path):
    params = load_params(sqlite_store)
    register_project(params)  # v1 champions (idempotent if an earlier test made them)
    models = tmp_path / "models"
    shutil.copytree(params.train.out, models)
    log_toy_model(models, "cgan", seed=5)  # a new cgan run
    evaluation = evaluation_of(sqlite_store)
    evaluation |= {"split_fingerprint": "changed", "cgan": {**evaluation["cgan"], "psnr": 0.0}}
    (tmp_path / "evaluation.json").write_text(json.dumps(evaluation))
    moved = load_params(sqlite_store, {"registry.out": str(tmp_path / "registry.json")})
    cnn, cgan, hint = register_project(moved, models=models, evaluation=tmp_path / "evaluation.json")
    assert not cnn.registered and not hint.registered
    assert cgan.registered and not cgan.promoted and cgan.champion == "1"
    # The champion was loaded from the registry and scored on the current split: its real PSNR.
    champion_psnr = evaluation_of(sqlite_store)["cgan"]["psnr"]
    assert f"does not beat {champion_psnr:g} of champion v1 (champion re-scored" in cgan.reason


def test_the_register_stage_ranks_each_model_in_its_own_direction(sqlite_store, tmp_path, monkeypatch):
    """The specs rank the c-GAN by PSNR (higher is better) and the hint model by chi^2 (lower is
    better): the stage promotes a new hint model only when its chi^2 is lower, a new c-GAN only
    when its PSNR is higher."""
    import dataclasses

    from colorization.models.specs import SPECS

    for kind, spec in SPECS.items():  # names of their own: independent of the other tests' versions
        monkeypatch.setitem(SPECS, kind, dataclasses.replace(spec, registered=f"direction-{kind}"))
    assert (SPECS["cgan"].ranking, SPECS["hint"].ranking) == (("cgan.psnr", "max"), ("hint.chi2", "min"))
    params = load_params(sqlite_store, {"registry.out": str(tmp_path / "registry.json")})
    models, evaluation = tmp_path / "models", evaluation_of(sqlite_store)
    shutil.copytree(params.train.out, models)

    def register(psnr: float, chi2: float) -> tuple[bool, bool]:
        """(c-GAN promoted?, hint model promoted?) for new versions scoring `psnr` and `chi2`."""
        scores = evaluation | {
            "cgan": {**evaluation["cgan"], "psnr": psnr},
            "hint": {**evaluation["hint"], "chi2": chi2},
        }
        (tmp_path / "evaluation.json").write_text(json.dumps(scores))
        _, cgan, hint = register_project(params, models=models, evaluation=tmp_path / "evaluation.json")
        assert cgan.registered and hint.registered
        return cgan.promoted, hint.promoted

    assert register(psnr=20.0, chi2=0.5) == (True, True)  # the first champions
    for seed, psnr, chi2, promoted in [(11, 19.0, 0.6, False), (12, 21.0, 0.4, True)]:
        log_toy_model(models, "cgan", seed=seed)
        log_toy_model(models, "hint", seed=seed)
        assert register(psnr, chi2) == (promoted, promoted), (psnr, chi2)


def test_registered_models_colour_like_the_local_folders(sqlite_store):
    params = load_params(sqlite_store)
    register_project(params)
    split = load_split(params.evaluate, StageInputs.of(params))
    local = load_models(params.train.out)
    generator, config = model_cache.load_registered("models:/lineart-cgan@champion")
    hint_net, _ = model_cache.load_registered("models:/lineart-hint@champion")
    assert config["kind"] == "cgan" and config["image_size"] == IMAGE_SIZE
    expected_hint = predict_hint(local["hint"], split.lineart)
    np.testing.assert_allclose(predict_hint(hint_net, split.lineart), expected_hint, atol=1e-5)
    # The guess before shrinking too (what the registry re-scores a champion hint model on).
    guess = predict_hint(local["hint"], split.lineart, raw=True)
    assert np.abs(guess - expected_hint).max() > 1e-3  # the demo's trust shrinks it
    np.testing.assert_allclose(predict_hint(hint_net, split.lineart, raw=True), guess, atol=1e-6)
    got = colorize(generator, split.lineart, split.hint)  # the same folder: the same colours
    np.testing.assert_array_equal(got, colorize(local["cgan"], split.lineart, split.hint))


def test_refusals_are_one_line(sqlite_store, tmp_path, monkeypatch):
    with pytest.raises(RegistryError, match="no alias 'nope' on 'lineart-cgan'"):
        model_cache.load_registered("models:/lineart-cgan@nope")
    with pytest.raises(RegistryError, match="model not found: models:/absent@champion"):
        model_cache.load_registered("models:/absent@champion")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'missing.db'}")
    with pytest.raises(RegistryError, match="no MLflow registry at"):
        model_cache.load_registered("models:/lineart-cgan@champion")
    assert not (tmp_path / "missing.db").exists()


def test_log_evaluation_adds_a_run_with_the_figure(sqlite_store):
    params = load_params(sqlite_store)
    result = evaluation_of(sqlite_store)
    figure = Path(params.evaluate.reports) / "comparison.png"
    runs = {"cgan": json.loads((Path(params.train.out) / "cgan/run.json").read_text())["run_id"]}
    run_id = registry.log_evaluation(EXPERIMENT, result, figure, runs)
    client = registry.client()
    run = client.get_run(run_id)
    assert run.data.metrics["cgan.psnr"] == pytest.approx(result["cgan"]["psnr"])
    assert [a.path for a in client.list_artifacts(run_id, "reports")] == ["reports/comparison.png"]
    assert "test.cgan_auto_hint.ssim" in client.get_run(runs["cgan"]).data.metrics


# ---------------------------------------------------------------- a real server


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a 127.0.0.1 port of its own (bound at 0, read back from its log) over a
    fresh sqlite store with proxied artifacts."""
    store = tmp_path / "server"
    store.mkdir()
    cmd = [
        str(MLFLOW),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination",
        str(store / "mlartifacts"),
    ]
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # not the client's setting
    # The job runner (GenAI jobs) would add five worker processes and seconds of start-up.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # Its own session: the server forks uvicorn, and stopping must reach that child too.
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=store, env=env, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{uvicorn_port(proc, log_path)}"
        wait_healthy(url, proc, log_path)
        yield url
    finally:
        stop_group(proc)
        log.close()
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_registry_through_mlflow_server(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    params_file = build_project(tmp_path / "project")
    params = load_params(params_file)
    for kind in ("cnn", "cgan", "hint"):
        log_toy_model(Path(params.train.out), kind)
    evaluate_project(params_file)
    register_project(params)

    api = f"{mlflow_server}/api/2.0/mlflow/registered-models"
    found = requests.get(f"{api}/search", params={"max_results": 100}, timeout=10).json()["registered_models"]
    aliases = {m["name"]: {a["alias"]: a["version"] for a in m.get("aliases", [])} for m in found}
    assert aliases == {name: {CHAMPION: "1"} for name in ("lineart-cnn", "lineart-cgan", "lineart-hint")}
    champion = requests.get(f"{api}/alias", params={"name": "lineart-cgan", "alias": CHAMPION}, timeout=10)
    assert champion.status_code == 200 and champion.json()["model_version"]["version"] == "1"
    assert CHALLENGER not in aliases["lineart-cgan"]

    # A colour image the models never saw, not square and not the model's size.
    rng = np.random.default_rng(7)
    image = np.full((90, 130, 3), 250, np.uint8)
    cv2.circle(image, (60, 45), 30, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    source = tmp_path / "unseen.png"
    cv2.imwrite(str(source), image)
    out = tmp_path / "out" / "unseen.png"
    result = CliRunner().invoke(
        app, ["colorize", str(source), "-o", str(out), "--params", str(params_file), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(out))
    assert written is not None and written.shape == image.shape


def test_register_without_tracking_skips_in_one_line_and_records_it(tmp_path, monkeypatch):
    """tracking.mlflow: false -> run.json has no run id; register must finish, not fail `dvc repro`."""
    params_file = build_project(tmp_path)  # its models were "trained" without MLflow
    for kind in ("cnn", "cgan", "hint"):
        save_model_dir(tmp_path / "models" / kind, kind, run_id=None)
    evaluate_project(params_file)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = CliRunner().invoke(app, ["register", "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and all("skipped" in line and "tracking.mlflow: false" in line for line in lines)
    recorded = json.loads(Path(load_params(params_file).registry.out).read_text())
    assert {name: r["version"] for name, r in recorded.items()} == dict.fromkeys(
        ("lineart-cnn", "lineart-cgan", "lineart-hint")
    )
    assert not (tmp_path / "mlflow.db").exists()  # no registry was created for nothing


def test_the_studio_lists_registry_versions_and_colours_with_the_champion(sqlite_store, tmp_path):
    from fastapi.testclient import TestClient

    from colorization.studio import StudioConfig, create_app

    register_project(load_params(sqlite_store))  # v1 champions (idempotent if an earlier test made them)
    studio = TestClient(create_app(StudioConfig(tmp_path / "no-models", None, "cpu")))
    choices = studio.get("/api/models").json()
    assert "error" not in choices["registry"], choices
    assert choices["folder"]["kinds"] == {"cnn": False, "cgan": False, "hint": False}
    for kind in ("cnn", "cgan", "hint"):
        versions = choices["registry"]["models"][kind]
        assert [int(v["version"]) for v in versions] == sorted(
            (int(v["version"]) for v in versions), reverse=True
        )
        assert sum(CHAMPION in v["aliases"] for v in versions) == 1
        assert all(v["uri"] == f"models:/lineart-{kind}/{v['version']}" for v in versions)
    image = np.full((90, 120, 3), 255, np.uint8)
    cv2.circle(image, (60, 45), 30, (0, 0, 0), 2)
    data = {
        "cgan_model": f"models:/lineart-cgan@{CHAMPION}",
        "hint_model": f"models:/lineart-hint@{CHAMPION}",
        "methods": "cgan,cgan_auto",
    }
    png = cv2.imencode(".png", image)[1].tobytes()
    answer = studio.post("/api/colorize", files={"image": ("in.png", png, "image/png")}, data=data)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"]) == (120, 90)
    assert [("error" in r, r["hint"]) for r in body["results"]] == [(False, "auto"), (False, "auto")]
