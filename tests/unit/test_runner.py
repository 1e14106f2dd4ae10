import os

import pytest
import yaml

from negrl_operator.api.artifact import MANIFEST, inputs_hash, write_json_atomic
from negrl_operator.api.stage_config import ServerRef
from negrl_operator.local.runner import clear_stale, finished_stages, load_experiment, next_stage
from negrl_operator.reconcile.graph import StageNode, stage_config, stage_graph
from tests.fixtures.paths import REPO

SAMPLE = StageNode("sample", "sample", "sample", serves="sft")
CREDIT = StageNode("credit", "credit", "credit", serves="sft")
TRAIN = StageNode("rft", "train", "rft", produces="rft")
EVAL_RFT = StageNode("eval-rft", "evaluate", "eval", serves="rft")
SWEEP = StageNode("sft-x2", "train", "sft", produces="sft-x2", multiplier=2)


@pytest.mark.parametrize("name,ready,serving,expected", [
    ("a stage of the served policy first", [TRAIN, EVAL_RFT, CREDIT], {"sft"}, CREDIT),
    ("then a stage needing no server", [EVAL_RFT, TRAIN], {"sft"}, TRAIN),
    ("then graph order", [EVAL_RFT, SAMPLE], set(), EVAL_RFT),
    ("sweep points after the methods' stages", [SAMPLE, SWEEP], set(), SAMPLE),
    ("a sweep point when nothing else is ready", [SWEEP], set(), SWEEP),
    ("nothing ready", [], {"sft"}, None),
])
def test_next_stage(name, ready, serving, expected):
    assert next_stage(ready, serving) == expected


def write_manifest(tmp_path, spec, node, root, mtime_ns):
    config = stage_config(spec, node, root, ServerRef(base_url="http://x/v1", model="m"))
    path = tmp_path / node.name / MANIFEST
    write_json_atomic(path, {"inputs_hash": inputs_hash(config), "summary": {}})
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_finished_stages_follow_inputs_and_upstream_reruns(tmp_path):
    spec = load_experiment(REPO / "examples" / "stargraph.yaml").spec
    nodes = stage_graph(spec)
    by_name = {node.name: node for node in nodes}
    root = str(tmp_path)
    write_manifest(tmp_path, spec, by_name["prepare"], root, 1_000)
    write_manifest(tmp_path, spec, by_name["sft-s0"], root, 2_000)
    write_manifest(tmp_path, spec, by_name["eval-sft-s0"], root, 3_000)
    assert finished_stages(spec, nodes, root) == {"prepare", "sft-s0", "eval-sft-s0"}
    # SFT ran again after its evaluation: the evaluation is stale
    os.utime(tmp_path / "sft-s0" / MANIFEST, ns=(4_000, 4_000))
    assert finished_stages(spec, nodes, root) == {"prepare", "sft-s0"}
    # different hyperparameters: SFT itself (and what follows it) is not done
    changed = spec.model_copy(deep=True)
    changed.stages.sft.params.learning_rate = 0.5
    assert finished_stages(changed, nodes, root) == {"prepare"}


def test_clear_stale_keeps_half_done_stages(tmp_path):
    half = tmp_path / "half"
    (half).mkdir()
    (half / "records-00000-of-00001.jsonl").write_text("{}\n")
    clear_stale(half)
    assert (half / "records-00000-of-00001.jsonl").exists()
    write_json_atomic(half / MANIFEST, {})
    clear_stale(half)
    assert not half.exists()


def test_invalid_manifest_names_the_field(tmp_path):
    manifest = yaml.safe_load((REPO / "examples" / "stargraph.yaml").read_text())
    manifest["spec"]["data"]["task"] = "chess"
    manifest["spec"]["stages"]["sft"]["params"]["learningRat"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ValueError) as error:
        load_experiment(path)
    assert "spec.data.task" in str(error.value)
    assert "spec.stages.sft.params.learningRat" in str(error.value)
