"""Training runs in MLflow: params, per-step metrics, sample grids, and the logged model. A sqlite
store keeps its artifacts in `mlartifacts/` beside the database file (as `mlflow server` does)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from colorization.tracking import flatten, tracking_uri


def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created (with a local artifact folder for sqlite) when missing."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if (found := mlflow.get_experiment_by_name(name)) is not None:
        return found.experiment_id
    db = Path(uri.removeprefix("sqlite:///"))  # a local artifact folder for sqlite; else the store decides
    local = (db.resolve().parent / "mlartifacts").as_uri() if uri.startswith("sqlite:///") else None
    return mlflow.create_experiment(name, artifact_location=local)


class TrainingRun:
    """One MLflow run; `resume_id` reopens the run a killed process left behind."""

    def __init__(self, experiment: str, run_name: str, resume_id: str | None = None, tags=None):
        experiment_id = ensure_experiment(experiment)
        self.client = MlflowClient(tracking_uri())
        try:
            resumable = resume_id is not None and self.client.get_run(resume_id) is not None
        except MlflowException:
            resumable = False
        if resumable:
            self.run = mlflow.start_run(run_id=resume_id)
        else:
            self.run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
        self.run_id, self.experiment_id = self.run.info.run_id, self.run.info.experiment_id
        self._pending: list[Metric] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        logged = self.client.get_run(self.run_id).data.params
        # A resumed run already has them; MLflow refuses to log a key twice.
        fresh = {k: v for k, v in flatten(params).items() if k not in logged}
        if fresh:
            mlflow.log_params(fresh)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffered; `flush` sends them in one request (per-step requests would dominate a CPU run)."""
        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]

    def flush(self) -> None:
        for start in range(0, len(self._pending), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=self._pending[start : start + 1000])
        self._pending = []

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        mlflow.log_image(image, key=key, step=step)

    def log_model(self, model_dir: Path, example: dict, output) -> str:
        """Log the published model folder as this run's serving model; returns its model URI."""
        from colorization.tracking.serving import log_pyfunc

        return log_pyfunc(model_dir, example, output)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        mlflow.end_run(status=status)
