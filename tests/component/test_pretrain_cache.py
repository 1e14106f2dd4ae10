"""The pretrained base is trained once per machine: a second `negrl run` workdir with the same
pretraining restores it from the stage cache (no training process runs); what the key depends on is
tests/unit/test_stage_cache.py's. Real prepare and pretrain stages, as child processes like `negrl run` starts them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.local.runner import finished_stages, run_cached, run_stage
from negrl_operator.reconcile.graph import stage_config, stage_graph
from tests.fixtures.paths import REPO

PRETRAIN = {"examples": 64, "chainLengths": [1, 2],
            "params": {"learningRate": 0.001, "epochs": 1, "microBatchSize": 16, "maxLength": 96}}


def experiment() -> NegRLExperiment:
    manifest = yaml.safe_load((REPO / "examples" / "arithmetic-quick.yaml").read_text())
    spec = manifest["spec"]
    spec["model"]["scratch"] = {"hidden": 64, "layers": 1, "heads": 1, "maxPositions": 160,
                                "pretrain": PRETRAIN}
    spec["data"]["source"].update(trainSize=32, validationSize=4, testSize=4)
    spec["data"]["syntheticSize"] = 16
    return NegRLExperiment.model_validate(manifest)


def prepare_then_pretrain(workdir: Path, run: NegRLExperiment, relayed: list[str]) -> dict:
    """Run prepare, then the pretrain stage through the cache; the pretrain summary."""
    root, nodes = str(workdir / "artifacts"), {node.name: node for node in stage_graph(run.spec)}
    run_stage(nodes["prepare"], stage_config(run.spec, nodes["prepare"], root, None, experiment="e"), workdir)
    config = stage_config(run.spec, nodes["pretrain"], root, None, experiment="e")
    return run_cached(nodes["pretrain"], config, workdir, lambda node, line: relayed.append(line))


def test_a_second_workdir_restores_the_base_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("NEGRL_CACHE_DIR", str(tmp_path / "cache"))
    lines: list[str] = []
    first = prepare_then_pretrain(tmp_path / "a", experiment(), lines)
    assert first["steps"] == 4 and (tmp_path / "a" / "logs" / "pretrain.log").exists()  # 64 examples / 16
    assert not [line for line in lines if "stage cache" in line] and lines[-1].startswith("progress: pretrain 4/4 ")
    lines.clear()

    second = prepare_then_pretrain(tmp_path / "b", experiment(), lines)
    assert second == first
    assert not (tmp_path / "b" / "logs" / "pretrain.log").exists()  # no training process ran
    [entry] = (tmp_path / "cache" / "stages").iterdir()
    assert lines == [f"pretrain: restored from the stage cache, {entry}"]
    weights = "pretrain/model/model.safetensors"
    assert (tmp_path / "b" / "artifacts" / weights).read_bytes() == (tmp_path / "a" / "artifacts" / weights).read_bytes()
    run = experiment()
    assert "pretrain" in finished_stages(run.spec, stage_graph(run.spec), str(tmp_path / "b" / "artifacts"))
    assert json.loads((tmp_path / "b" / "logs" / "pretrain.summary.json").read_text()) == first
