"""What `mlflow models serve` runs: a pyfunc around a `models/<kind>/` folder (docs/serving.md).
The local hint planes are a param, not an input, because MLflow's tensor inputs cannot be optional."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ParamSchema, ParamSpec

from colorization.models import CONFIG_FILE, WEIGHTS_FILE, load_trained, read_config
from colorization.models.specs import SPECS

ARTIFACT = "model"  # the artifact key, and the folder name inside the logged model


class LineartModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        folder = context.artifacts[ARTIFACT]
        self.config = read_config(folder)
        self.net = load_trained(folder)

    def predict(self, context, model_input, params=None) -> np.ndarray:
        return predict(self.net, self.config, model_input, params)


def predict(net, config: dict, model_input, params: dict | None = None) -> np.ndarray:
    """The served answer for one request (also what training logs as the output example)."""
    from colorization.inference import colorize, predict_hint
    from colorization.local_hints import LOCAL_PLANES

    lineart = np.asarray(model_input["lineart"], np.float32).round().clip(0, 255).astype(np.uint8)
    if not SPECS[config["kind"]].generator:
        return predict_hint(net, lineart)
    flat, local = (params or {}).get("local"), None  # flat floats: local hints [N, 4, S, S]
    if flat is not None and len(flat) > 0:
        n, s = lineart.shape[:2]
        if (size := np.size(flat)) != n * LOCAL_PLANES * s * s:
            raise ValueError(f"params.local must hold {n} x {LOCAL_PLANES} x {s} x {s} numbers, got {size}")
        local = np.asarray(flat, np.float32).reshape(n, LOCAL_PLANES, s, s)
    hint = np.asarray(model_input["hint"], np.float32)
    return colorize(net, lineart, hint, local=local).astype(np.float32)


def example_input(kind: str, lineart: np.ndarray, hint: np.ndarray) -> dict[str, np.ndarray]:
    """The named inputs a `kind` model is served with (float32: JSON numbers arrive as floats)."""
    example = {"lineart": lineart.astype(np.float32)}
    if SPECS[kind].generator:
        example["hint"] = np.asarray(hint, np.float32)
    return example


def log_pyfunc(model_dir: Path, example: dict[str, np.ndarray], output: np.ndarray) -> str:
    """Log `model_dir`'s model.pt + config.json as this run's model `model`; returns its URI."""
    signature = infer_signature(example, output)
    if read_config(model_dir)["arch"].get("local_hints"):  # optional local hint planes, flattened
        params = ParamSchema([ParamSpec("local", "float", [], (-1,))])
        signature = ModelSignature(signature.inputs, signature.outputs, params)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ARTIFACT  # MLflow keeps the folder's name: artifacts/model/
        folder.mkdir()
        for name in (WEIGHTS_FILE, CONFIG_FILE):  # the model, not the previews or run.json
            shutil.copy2(Path(model_dir) / name, folder / name)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=LineartModel(),
            artifacts={ARTIFACT: str(folder)},
            signature=signature,
            input_example=example,
            # Stated, not inferred: inference would import the model in a subprocess.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
            code_paths=[str(Path(__file__).resolve().parents[1])],  # the colorization package
        )
    return info.model_uri
