"""Where a model came from: the git commit (dirty or not) and the DVC hash of its data; plain git
and dvc.lock reading, no MLflow: the register stage turns these into tags."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

# What the pipeline itself rewrites in tracked files before `register` runs: never a sign that
# the code or params that made a model differ from the commit.
PIPELINE_OUTPUTS = ("dvc.lock", "metrics/", "plots/")


def pipeline_outputs(cwd: str | Path = ".") -> set[str]:
    """dvc.lock, metrics/, plots/ and every out, metric and plot dvc.yaml declares."""
    found = set(PIPELINE_OUTPUTS)
    try:
        stages = (yaml.safe_load((Path(cwd) / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return found
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in (stage or {}).get(key) or []:
                found.add(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    return found


def _git(*args: str, cwd: str | Path) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """Tags for a model's provenance: `git_commit` is HEAD's hash, with '-dirty' only when files
    other than the pipeline's own outputs differ from it; then `git_changed` names them."""
    head = (_git("rev-parse", "HEAD", cwd=cwd) or "").strip()
    if not head:
        return {"git_commit": "unknown"}
    status = _git("status", "--porcelain", "-z", "--untracked-files=no", cwd=cwd) or ""
    entries, changed = iter(status.split("\0")), []  # tracked files that differ from HEAD, staged or not
    for entry in entries:
        if len(entry) > 3:
            changed.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)  # a rename's or copy's original path follows
    outputs = {o.rstrip("/") for o in pipeline_outputs(cwd)}
    others = sorted(p for p in changed if not any(p == o or p.startswith(o + "/") for o in outputs))
    if not others:
        return {"git_commit": head}
    shown = ", ".join(others[:5]) + (f" (+{len(others) - 5} more)" if len(others) > 5 else "")
    return {"git_commit": head + "-dirty", "git_changed": shown}


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD's hash, '-dirty' when files besides the pipeline's outputs differ; 'unknown' outside git."""
    return git_state(cwd)["git_commit"]


def dvc_data_hash(data_outs: tuple[str, ...], lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """md5 of each of `data_outs` (the processed data) as dvc.lock records it, plus one combined hash."""
    path = Path(lock_path)
    if not path.exists():
        return {"data_md5": "unknown"}
    lock = yaml.safe_load(path.read_text()) or {}
    found = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") in data_outs:
                found[out["path"]] = out.get("md5", "unknown")
    if not found:
        return {"data_md5": "unknown"}
    combined = hashlib.md5("".join(f"{p}:{found[p]}\n" for p in sorted(found)).encode()).hexdigest()
    return {"data_md5": combined} | {f"data_md5.{Path(p).name}": md5 for p, md5 in sorted(found.items())}


def file_md5(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()
