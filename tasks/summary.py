"""The run's summary as Prefect artifacts: what it produced, scored and registered.

Read from the files the stages publish (metrics/evaluation.json, models/<name>/run.json,
the registry JSON), so the summary shows what DVC versions, not what a task happened
to return.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

SUMMARY_KEY = "pipeline-summary"
METRICS_KEY = "pipeline-metrics"


def read_json(path: str | Path) -> Any:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def metric_rows(evaluation: dict | None) -> list[dict]:
    """One row per method of the evaluation JSON (its nested sections), one column per metric."""
    rows = []
    for method, scores in (evaluation or {}).items():
        if isinstance(scores, dict):
            rows.append({"method": method, **{k: v for k, v in scores.items() if not isinstance(v, dict)}})
    return rows


def markdown_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(none)"]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


def summary_markdown(run: dict, evaluation: dict | None, training: dict, registry: Any) -> str:
    lines = [f"# Pipeline run `{run.get('flow_run_name', '')}`", ""]
    if run.get("failed"):
        lines += [
            f"**Failed** after stages {', '.join(run.get('stages', [])) or '(none)'}: `{run['failed']}`",
            "",
        ]
    lines += [f"- params: `{run['params_path']}` in `{run['workdir']}`"]
    lines += [f"- overrides: `{json.dumps(run.get('overrides') or {}, sort_keys=True)}`"]
    lines += [f"- stages: {', '.join(run.get('stages', [])) or '(none)'}"]
    lines += [f"- DVC: recorded {', '.join(run.get('dvc_committed', [])) or 'nothing'} in dvc.lock"]
    lines += [f"- DVC remote: {run.get('dvc_remote') or 'none (not pushed)'}", ""]
    lines += ["## Data", ""]
    for stage, info in run.get("data", {}).items():
        facts = ", ".join(f"{k} {_cell(v)}" for k, v in info.items() if k != "fingerprint")
        lines.append(f"- **{stage}**: {facts}")
    lines += ["", "## MLflow training runs", ""]
    lines += markdown_table([{"model": name, **info} for name, info in training.items()])
    lines += ["", "## Evaluation", ""]
    if run.get("evaluate_run_id"):
        lines += [f"- MLflow run: `{run['evaluate_run_id']}`"]
    if evaluation:
        scalars = {k: v for k, v in evaluation.items() if not isinstance(v, dict)}
        lines += [f"- {k}: `{_cell(v)}`" for k, v in scalars.items()] + [""]
    lines += markdown_table(metric_rows(evaluation))
    lines += ["", "## MLflow registry", ""]
    if isinstance(registry, dict) and all(isinstance(v, dict) for v in registry.values()):
        lines += markdown_table([{"registered model": name, **info} for name, info in registry.items()])
    else:
        lines += ["```json", json.dumps(registry, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


@task(name="publish_summary")
def publish(
    run: dict, evaluation_path: str | None, models_dir: str | None, registry_path: str | None
) -> dict:
    """Create the `pipeline-summary` markdown artifact (and the metrics table); returns its content."""
    evaluation = read_json(evaluation_path) if evaluation_path else None
    training = {}
    if models_dir:
        for run_json in sorted(Path(models_dir).glob("*/run.json")):
            training[run_json.parent.name] = read_json(run_json)
    registry = read_json(registry_path) if registry_path else None
    markdown = summary_markdown(run, evaluation, training, registry)
    create_markdown_artifact(
        markdown=markdown, key=SUMMARY_KEY, description="What this pipeline run produced"
    )
    if rows := metric_rows(evaluation):
        create_table_artifact(table=rows, key=METRICS_KEY, description="metrics/evaluation.json")
    return {"evaluation": evaluation, "training": training, "registry": registry}
