"""The run's summary as Prefect artifacts: what it produced, scored and registered, read from the
files the stages publish, so it shows what DVC versions, not what a task happened to return."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

SUMMARY_KEY = "pipeline-summary"
METRICS_KEY = "pipeline-metrics"


def read_json(path: str | Path | None) -> Any:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def metric_rows(evaluation: dict | None) -> list[dict]:
    """One row per method of the evaluation JSON (its nested sections), one column per metric."""
    return [
        {"method": method, **{k: v for k, v in scores.items() if not isinstance(v, dict)}}
        for method, scores in (evaluation or {}).items()
        if isinstance(scores, dict)
    ]


def markdown_table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(none)"]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


# Per section, the stage whose run writes its file and the MLflow run id its entries name: a
# section whose stage did not finish in this run shows what an earlier run left on disk, and says so.
SECTIONS = {
    "training": ("train", "run_id"),
    "evaluation": ("evaluate", None),
    "registry": ("register", "source_run_id"),
}


def _earlier(run: dict, section: str, data: Any, written: dict[str, str]) -> list[str]:
    """The label of a section that this run did not produce (empty when it did, or it is empty)."""
    stage, id_key = SECTIONS[section]
    if not data or any(done.split("@")[0] == stage for done in run.get("stages", [])):  # train@cnn: train
        return []
    entries = data.values() if isinstance(data, dict) and id_key else []
    run_ids = [e[id_key] for e in entries if isinstance(e, dict) and e.get(id_key)]
    when = f", written {written[section]}" if written.get(section) else ""
    runs = "runs" if len(set(run_ids)) > 1 else "run"
    by = f" (MLflow {runs} {', '.join(f'`{r}`' for r in dict.fromkeys(run_ids))})" if run_ids else ""
    return [
        f"_Earlier result: not from this run, whose `{stage}` stage did not run; left by an "
        f"earlier run{by}{when}._",
        "",
    ]


def summary_markdown(
    run: dict, evaluation: dict | None, training: dict, registry: Any, written: dict[str, str] | None = None
) -> str:
    """The run's summary; `written`: when each section's file was written, shown for an earlier run's."""
    written = written or {}
    seconds = run.get("seconds", {})
    finished = ", ".join(f"{s} ({seconds[s]} s)" if s in seconds else s for s in run.get("stages", []))
    lines = [f"# Pipeline run `{run.get('flow_run_name', '')}`", ""]
    if run.get("failed"):
        where = f" in stage `{run['failed_stage']}`" if run.get("failed_stage") else ""
        lines += [f"**Failed**{where}: `{run['failed']}`", ""]
    lines += [f"- params: `{run['params_path']}` in `{run['workdir']}`"]
    lines += [f"- overrides: `{json.dumps(run.get('overrides') or {}, sort_keys=True)}`"]
    if run.get("until"):
        lines += [f"- until: `{run['until']}`"]
    lines += [f"- stages finished in this run: {finished or 'none'}"]
    lines += [f"- DVC ran (and recorded in dvc.lock): {', '.join(run.get('ran', [])) or 'nothing'}"]
    lines += [f"- DVC found up to date: {', '.join(run.get('skipped', [])) or 'nothing'}"]
    lines += [f"- DVC remote: {run.get('dvc_remote') or 'none (not pushed)'}", ""]
    lines += ["## MLflow training runs", "", *_earlier(run, "training", training, written)]
    lines += markdown_table([{"model": name, **info} for name, info in training.items()])
    lines += ["", "## Evaluation", "", *_earlier(run, "evaluation", evaluation, written)]
    if run.get("evaluate_run_id"):
        lines += [f"- MLflow run: `{run['evaluate_run_id']}`"]
    if evaluation:
        lines += [f"- {k}: `{_cell(v)}`" for k, v in evaluation.items() if not isinstance(v, dict)] + [""]
    lines += markdown_table(metric_rows(evaluation))
    lines += ["", "## MLflow registry", "", *_earlier(run, "registry", registry, written)]
    if registry is None:
        lines += ["(none)"]
    elif isinstance(registry, dict) and all(isinstance(v, dict) for v in registry.values()):
        lines += markdown_table([{"registered model": name, **info} for name, info in registry.items()])
    else:
        lines += ["```json", json.dumps(registry, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


@task(name="publish_summary")
def publish(
    run: dict, evaluation_path: str | None, models_dir: str | None, registry_path: str | None
) -> dict:
    """Create the `pipeline-summary` markdown artifact, and the metrics table only when this run
    evaluated (not an earlier run's scores as this run's); returns its content."""
    run_files = sorted(Path(models_dir).glob("*/run.json")) if models_dir else []
    training = {run_json.parent.name: read_json(run_json) for run_json in run_files}
    evaluation, registry = read_json(evaluation_path), read_json(registry_path)
    files = {"training": run_files, "evaluation": [evaluation_path], "registry": [registry_path]}
    written = {}  # when each section's newest file was written
    for section, paths in files.items():
        if times := [Path(p).stat().st_mtime for p in paths if p and Path(p).exists()]:
            written[section] = datetime.fromtimestamp(max(times), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    markdown = summary_markdown(run, evaluation, training, registry, written)
    failed = " (failed)" if run.get("failed") else ""
    create_markdown_artifact(
        markdown=markdown, key=SUMMARY_KEY, description=f"What this pipeline run produced{failed}"
    )
    if "evaluate" in run.get("stages", []) and (rows := metric_rows(evaluation)):
        create_table_artifact(table=rows, key=METRICS_KEY, description="metrics/evaluation.json")
    return {"evaluation": evaluation, "training": training, "registry": registry}
