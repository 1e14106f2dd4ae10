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


def spec_of(name: str) -> NegRLExperiment:
    return NegRLExperiment.model_validate(yaml.safe_load((EXAMPLES[0].parent / name).read_text())).spec


def test_the_quick_star_graph_example_is_the_default_with_one_seed():
    """The smoke run must run the task and configuration the demo reports, only with fewer seeds."""
    default, quick = spec_of("stargraph.yaml"), spec_of("stargraph-quick.yaml")
    assert default.seeds == [0, 1, 2] and quick.seeds == [0]
    assert quick.model_copy(update={"seeds": default.seeds}) == default


def test_the_default_star_graph_sweep_is_compute_matched_and_within_the_training_set():
    spec = spec_of("stargraph.yaml")
    assert spec.sweep.sft_steps == 2000
    assert max(spec.sweep.sft_multipliers) * spec.data.synthetic_size <= spec.data.source.train_size


def test_the_overtrained_ablation_changes_only_how_many_graphs_pi_sft_sees():
    """The ablation isolates memorisation: the default's task, model and schedule, with fewer graphs
    for the same 2000 steps (more epochs), and its 8n point still within the training set."""
    default, overtrained = spec_of("stargraph.yaml"), spec_of("stargraph-overtrained.yaml")
    n = overtrained.data.synthetic_size
    assert n < default.data.synthetic_size
    assert overtrained.sweep.sft_steps * default.stages.sft.params.micro_batch_size / n >= 10  # epochs over n
    assert max(overtrained.sweep.sft_multipliers) * n <= overtrained.data.source.train_size
    same_data = overtrained.data.model_copy(update={"synthetic_size": default.data.synthetic_size})
    assert overtrained.model_copy(update={"data": same_data}) == default
