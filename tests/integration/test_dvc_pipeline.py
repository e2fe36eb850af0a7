"""`dvc repro` in a fresh git + DVC copy of the project: up to date after, no-op when repeated."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = str(Path(sys.executable).parent)


def sh(cmd: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    result = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def tiny_repo(repo_copy: Path) -> Path:
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["acquire"]["synthetic"]["count"] = 30
    params["lineart"]["image_size"] = 32
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", repo_copy)
    return repo_copy


def test_data_stages_are_reproducible_and_cached(tiny_repo):
    stages = "acquire preprocess"
    sh(f"dvc repro {stages}", tiny_repo)
    assert "up to date" in sh(f"dvc status {stages}", tiny_repo)
    second = sh(f"dvc repro {stages}", tiny_repo)
    assert "didn't change, skipping" in second and "Running stage" not in second
    lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())
    assert set(lock["stages"]["preprocess"]["params"]["params.yaml"]) == {
        "lineart.out", "lineart.image_size", "lineart.resize", "lineart.extractor",
        "lineart.canny", "lineart.xdog", "lineart.dilate", "lineart.shard_size", "lineart.split",
        "lineart.max_pixels", "lineart.max_file_bytes", "histograms.out",
    }  # fmt: skip
    # One stage, two outputs: the line-art store and the histograms, from one decode per image.
    outs = {out["path"] for out in lock["stages"]["preprocess"]["outs"]}
    assert outs == {"data/processed/lineart", "data/processed/histograms.parquet"}
    # A knob the stage does not read (its worker count) re-runs nothing.
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    params["lineart"]["workers"] = 1
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "up to date" in sh(f"dvc status {stages}", tiny_repo)
    # The local default remote works out of the box.
    sh("dvc push", tiny_repo)
    assert any((tiny_repo / ".dvc-remote").rglob("*"))
