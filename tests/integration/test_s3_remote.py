"""Remote storage on S3: a DVC remote and MLflow artifacts, against a local S3 server.

moto's server stands in for S3 on 127.0.0.1 (no network, any credentials accepted). The
set-up is docs/team.md's: DVC with `dvc remote add -d s3 s3://...` and
`endpointurl`, and an `mlflow server` that proxies artifacts to `--artifacts-destination
s3://...`, so clients need only MLFLOW_TRACKING_URI and never an S3 credential.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.servers import HUNG_S, stop_group, uvicorn_port, wait_healthy

pytest.importorskip("dvc_s3", reason="the s3 extra: pip install -e '.[s3]'")
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra)")

BIN = Path(sys.executable).parent
BUCKET = "colorization-test"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Whatever the machine has configured must not leak into the servers or the client.
AWS_SETTINGS = (
    *CREDENTIALS,
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
)

pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AWS_SETTINGS}
    return env | {"DVC_NO_ANALYTICS": "1"} | extra


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a 127.0.0.1 port it binds itself, with an empty bucket: (endpoint, client)."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        server.stop()


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- DVC


def dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=HUNG_S
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_dvc_push_then_pull_from_an_empty_cache_restores_the_data(s3, tmp_path):
    endpoint, client = s3
    repo = tmp_path / "project"
    data = repo / "data" / "processed"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(data / "shard-00000.color.npy", rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    np.save(data / "shard-00000.lineart.npy", rng.integers(0, 256, (8, 32, 32), dtype=np.uint8))
    (data / "meta.json").write_text('{"image_size": 32}\n')
    (repo / "data" / "manifest.csv").write_text("id,sha256\na,00\nb,11\n")
    original = files_under(repo / "data")

    env = clean_env(**CREDENTIALS)  # what a machine with S3 access has in its environment
    dvc(repo, env, "init", "--no-scm")
    dvc(repo, env, "remote", "add", "-d", "s3", f"s3://{BUCKET}/dvcstore")
    dvc(repo, env, "remote", "modify", "s3", "endpointurl", endpoint)
    dvc(repo, env, "add", "data")
    dvc(repo, env, "push")

    stored = keys(client, "dvcstore/")
    # data/ is one .dir listing plus one object per file, content-addressed by md5.
    assert len(stored) == len(original) + 1
    assert all(k.startswith("dvcstore/files/md5/") for k in stored)

    # A fresh clone: no cache, no data, only data.dvc and the config.
    for gone in (repo / ".dvc" / "cache", repo / "data"):
        subprocess.run(["rm", "-rf", str(gone)], check=True)
    dvc(repo, env, "pull")
    assert files_under(repo / "data") == original
    assert "in sync" in dvc(repo, env, "status", "--cloud")


# ---------------------------------------------------------------- MLflow


@pytest.fixture
def mlflow_s3_server(s3, tmp_path):
    """`mlflow server` over sqlite with artifacts proxied to s3://BUCKET/mlflow; yields its URL."""
    endpoint, _ = s3
    home = tmp_path / "server"
    home.mkdir()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow",
    ]
    # Only the server holds the S3 endpoint and credentials.
    env = clean_env(
        **CREDENTIALS, MLFLOW_S3_ENDPOINT_URL=endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"
    )
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=home, env=env, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{uvicorn_port(proc, log)}"
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop_group(proc)


@pytest.fixture
def client_env(monkeypatch):
    """The client's environment: no S3 endpoint and no credentials at all."""
    import mlflow

    for name in AWS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    mlflow.set_tracking_uri(None)


def tiny_net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Sigmoid()).eval()


def test_mlflow_server_keeps_run_artifacts_and_models_in_s3(s3, mlflow_s3_server, client_env, tmp_path):
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    _, client = s3
    client_env.setenv("MLFLOW_TRACKING_URI", mlflow_s3_server)
    mlflow.set_tracking_uri(mlflow_s3_server)
    experiment_id = mlflow.create_experiment("s3-remote")
    net = tiny_net()
    example = np.linspace(0, 1, 2 * 16 * 16, dtype=np.float32).reshape(2, 1, 16, 16)
    with torch.no_grad():
        expected = net(torch.from_numpy(example)).numpy()

    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("lr", 0.001)
        mlflow.log_metric("val_l1", 0.25, step=1)
        mlflow.log_text("line art in, colour out\n", "notes/readme.txt")
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            signature=infer_signature(example, expected),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            registered_model_name="s3-tiny",
        )
    run_id = run.info.run_id

    # The experiment lives behind the server's proxy; the bytes are in the bucket.
    assert mlflow.get_experiment(experiment_id).artifact_location == f"mlflow-artifacts:/{experiment_id}"
    notes = f"mlflow/{experiment_id}/{run_id}/artifacts/notes/readme.txt"
    body = client.get_object(Bucket=BUCKET, Key=notes)["Body"].read()
    assert body == b"line art in, colour out\n"
    model_keys = keys(client, f"mlflow/{experiment_id}/models/{info.model_id}/artifacts/")
    names = {Path(k).name for k in model_keys}
    assert {"MLmodel", "requirements.txt"} <= names, model_keys
    assert not (tmp_path / "server" / "mlartifacts").exists()  # nothing fell back to local disk

    # Loaded back through the server, by the logged model and by the registry.
    for uri in (info.model_uri, "models:/s3-tiny/1"):
        loaded = mlflow.pytorch.load_model(uri, map_location="cpu")
        with torch.no_grad():
            np.testing.assert_allclose(loaded(torch.from_numpy(example)).numpy(), expected, atol=1e-6)
    downloaded = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes", dst_path=tmp_path)
    assert (Path(downloaded) / "readme.txt").read_text() == "line art in, colour out\n"


def test_mlflow_client_writes_straight_to_s3_without_a_server(s3, client_env, tmp_path):
    """The serverless form: a sqlite store and an experiment whose artifact_location is s3://."""
    import mlflow
    import mlflow.pytorch
    import torch

    endpoint, client = s3
    for name, value in CREDENTIALS.items():
        client_env.setenv(name, value)
    client_env.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client_env.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("direct", artifact_location=f"s3://{BUCKET}/direct")
    net = tiny_net()
    example = np.zeros((1, 1, 8, 8), np.float32)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("hello\n", "hello.txt")
        info = mlflow.pytorch.log_model(net, name="model", input_example=example, pip_requirements=["torch"])
    assert client.get_object(Bucket=BUCKET, Key=f"direct/{run.info.run_id}/artifacts/hello.txt")[
        "Body"
    ].read()
    assert any(k.endswith("/MLmodel") for k in keys(client, f"direct/models/{info.model_id}/"))
    loaded = mlflow.pytorch.load_model(info.model_uri, map_location="cpu")
    with torch.no_grad():
        assert torch.equal(loaded(torch.from_numpy(example)), net(torch.from_numpy(example)))
