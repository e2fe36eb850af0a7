"""The `git_commit` tag of registered versions: the commit, and whether anything besides the
pipeline's own outputs (dvc.lock, metrics/, plots/, dvc.yaml's outs) differs from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from colorization.provenance import git_commit, git_state

REPO = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_is_dirty_only_for_files_the_pipeline_does_not_write(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    files = {
        "dvc.lock": "schema: '2.0'\n",
        "metrics/evaluation.json": "{}\n",
        "metrics/registry.json": "[]\n",
        "plots/train/cgan.csv": "step,d_loss\n",
        "params.yaml": "seed: 0\n",
        "colorization/train.py": "# code\n",
    }
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == {"git_commit": head}

    # What a `dvc repro` rewrites before `register` runs: still the clean commit.
    for rel in ("dvc.lock", "metrics/evaluation.json", "plots/train/cgan.csv"):
        (repo / rel).write_text("changed by the pipeline\n")
    git(repo, "add", "metrics/evaluation.json")  # staged or not
    assert git_commit(repo) == head

    # A params or code change the commit does not hold: dirty, and the tags say which files.
    (repo / "params.yaml").write_text("seed: 1\n")
    (repo / "colorization/train.py").write_text("# edited\n")
    assert git_state(repo) == {
        "git_commit": f"{head}-dirty",
        "git_changed": "colorization/train.py, params.yaml",
    }
    assert git_commit(tmp_path) == "unknown"  # not a git repository
