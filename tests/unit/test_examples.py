"""Every manifest in examples/ is a valid NegRLExperiment (the same model the CRD comes from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.reconcile.graph import stage_graph

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_gpu_examples():
    assert {"gsm8k.yaml", "math.yaml"} <= {path.name for path in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_is_a_valid_experiment(path):
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path} is empty"
    for doc in documents:
        experiment = NegRLExperiment.model_validate(doc)
        nodes = stage_graph(experiment.spec)
        assert nodes[0].name == "prepare" and any(node.kind == "evaluate" for node in nodes)
