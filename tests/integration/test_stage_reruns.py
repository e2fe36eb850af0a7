"""After a change to one code file a stage runs, or to one params key per stage, `dvc status`
names exactly the stages that read it, and the Prefect flow then re-runs those and only what
follows them (through DVC, so `dvc repro` would decide the same), leaving `dvc status` clean.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
import yaml

from flows.pipeline import pipeline
from tasks.dvc import pipeline_stages
from tests.integration.test_flows import (
    dvc_status,
    prefect_api,  # noqa: F401 (a fixture)
    tiny_project,
)


def _stage_graph(root: Path) -> nx.DiGraph:
    """Stage names; an edge from each stage to every stage it reads from."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        return nx.relabel_nodes(graph, {s: s.name for s in graph.nodes})


# ---------------------------------------------------------------- re-runs, end to end


@pytest.fixture(scope="module")
def project(prefect_api, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """A tiny project the flow has run end to end (MLflow off: register skips, quickly)."""
    from tests.integration.test_flows import write_tiny_params

    root = tiny_project(tmp_path_factory.mktemp("contract") / "project")
    write_tiny_params(root / "params.yaml", {"tracking.mlflow": False})
    first = pipeline(workdir=str(root))
    assert first["ran"] == pipeline_stages(root) and not dvc_status(root)
    return root


def touch_code(root: Path, file: str) -> None:
    path = root / file
    path.write_text(path.read_text() + "\n# changed by test_stage_contract\n")


def set_param(root: Path, key: str, value) -> None:
    path = root / "params.yaml"
    data = yaml.safe_load(path.read_text())
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    assert last in node and node[last] != value, key
    node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


TRAINS = {"train@cnn", "train@cgan", "train@hint"}


# (what changes, the stages that read it directly, stages that must follow because its output changes)
CASES = [
    ("code", "colorization/sources/synthetic.py", {"acquire"}, set()),
    ("code", "colorization/preprocess.py", {"preprocess"}, set()),
    ("code", "colorization/augment.py", TRAINS, set()),
    ("code", "colorization/figure.py", {"evaluate", "register"}, set()),  # register re-scores with it
    ("code", "colorization/register.py", {"register"}, set()),
    ("param", ("acquire.synthetic.count", 40), {"acquire"}, {"preprocess", *TRAINS, "evaluate"}),
    ("param", ("lineart.canny.low", 90), {"preprocess", "register"}, {*TRAINS, "evaluate"}),  # a params tag
    ("param", ("train.hint.lr", 0.002), {"train@hint", "register"}, {"evaluate"}),
    ("param", ("evaluate.figure_examples", 3), {"evaluate"}, set()),
    ("param", ("registry.out", "metrics/registry-moved.json"), {"register"}, set()),
]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "change", "reads", "follows"), CASES, ids=[str(c[1]) for c in CASES])
def test_a_change_reruns_its_stages_and_what_follows_only(project, kind, change, reads, follows):
    if kind == "code":
        touch_code(project, change)
    else:
        set_param(project, *change)
    assert dvc_status(project) == reads  # DVC: exactly the stages that read the change
    downstream = set(reads)
    graph = _stage_graph(project)
    for stage in reads:
        downstream |= nx.ancestors(graph, stage)  # the stages that read its outputs
    result = pipeline(workdir=str(project))
    ran = set(result["ran"])
    assert reads <= ran and follows <= ran  # the changed stages, and what their new outputs feed
    assert ran <= downstream, f"re-ran {sorted(ran - downstream)}, which the change does not reach"
    assert set(result["skipped"]) == set(pipeline_stages(project)) - ran
    assert not dvc_status(project)  # and DVC agrees with what the flow did
