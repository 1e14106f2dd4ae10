"""The stage graph shared by the operator and `negrl run`, and each stage's config."""

from __future__ import annotations

import pytest

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.stage_config import ServerRef, parse_stage_config
from negrl_operator.reconcile.graph import (
    BASE_POLICY,
    policies_to_serve,
    policy_model,
    runnable,
    stage_config,
    stage_graph,
    storage_root,
)
from tests.unit.test_experiment import spec_with

SERVER = ServerRef(base_url="http://sampler:8000/v1", model="policy")
# outcome and per-step DPO pairs are built together (equal counts), so outcome-dpo follows step-pairs
FULL = ["prepare", "sft", "sample", "rft-data", "rft", "credit", "step-pairs", "outcome-dpo", "step-dpo",
        "eval-sft", "eval-rft", "eval-outcome-dpo", "eval-step-dpo"]
UNMATCHED = ["prepare", "sft", "sample", "rft-data", "rft", "outcome-dpo", "credit", "step-pairs", "step-dpo",
             "eval-sft", "eval-rft", "eval-outcome-dpo", "eval-step-dpo"]
OFF = {"enabled": False}


def names(**changes) -> list[str]:
    return [node.name for node in stage_graph(ExperimentSpec.model_validate(spec_with(**changes)))]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, FULL, id="everything"),
        pytest.param({"stages__pairs": {"matchCounts": False}}, UNMATCHED, id="unmatched-pairs"),
        pytest.param({"stages__stepDpo": OFF},
                     [n for n in UNMATCHED if n not in {"step-pairs", "step-dpo", "eval-step-dpo"}],
                     id="no-step-dpo-keeps-credit"),
        pytest.param({"stages__stepDpo": OFF, "stages__credit": OFF},
                     [n for n in UNMATCHED if n not in {"credit", "step-pairs", "step-dpo", "eval-step-dpo"}], id="no-credit"),
        pytest.param({"stages__rft": OFF, "stages__outcomeDpo": OFF},
                     [n for n in FULL if "rft" not in n and "outcome" not in n], id="no-rft-data"),
        pytest.param({"stages__eval": OFF}, [n for n in FULL if not n.startswith("eval")], id="no-eval"),
        pytest.param({"stages": {k: OFF for k in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo")}},
                     ["prepare", "sft", "eval-sft"], id="sft-only"),
        pytest.param({"stages__eval": {"trainQuestions": 100}}, [*FULL, "eval-train-sft"], id="memorisation-check"),
        pytest.param({"stages__sft": OFF, "stages__eval": OFF},
                     ["prepare", "sample", "rft-data", "rft", "credit", "step-pairs", "outcome-dpo", "step-dpo"],
                     id="base-is-the-sft-policy"),
    ],
)
def test_graph_leaves_out_disabled_stages_and_what_only_they_feed(changes, expected):
    assert names(**changes) == expected


def test_seeds_and_sweep_suffix_names_and_share_prepare():
    got = names(seeds=[0, 1], data__syntheticSize=100, sweep={"sftMultipliers": [2]}, stages__credit=OFF,
                stages__stepDpo=OFF, stages__rft=OFF, stages__outcomeDpo=OFF, stages__sampling=OFF)
    assert got == ["prepare", "sft-s0", "sft-x2-s0", "eval-sft-s0", "eval-sft-x2-s0",
                   "sft-s1", "sft-x2-s1", "eval-sft-s1", "eval-sft-x2-s1"]


def test_base_policy_is_evaluated_once_across_seeds():
    got = names(seeds=[0, 1], stages__sft=OFF, stages={k: OFF for k in ("sft", "sampling", "rft", "credit", "stepDpo",
                                                                        "outcomeDpo")})
    assert got == ["prepare", "eval-base"]


def test_dependencies_point_backwards_and_policies_are_trained_first():
    nodes = stage_graph(ExperimentSpec.model_validate(spec_with(seeds=[3, 4])))
    ancestors: dict[str, set[str]] = {}
    produced = {node.produces for node in nodes if node.produces}
    for node in nodes:
        assert set(node.needs) <= set(ancestors), node
        ancestors[node.name] = set(node.needs).union(*(ancestors[need] for need in node.needs))
        assert node.serves is None or node.serves in produced | {BASE_POLICY}
        assert node.serves is None or node.serves in ancestors[node.name]
    by_name = {node.name: node for node in nodes}
    assert by_name["step-dpo-s4"].needs == ("step-pairs-s4", "sft-s4")
    assert by_name["credit-s3"].serves == "sft-s3" and by_name["eval-rft-s3"].serves == "rft-s3"


@pytest.mark.parametrize(
    ("done", "serve", "ready"),
    [
        pytest.param(set(), [], ["prepare"], id="start"),
        pytest.param({"prepare"}, [], ["sft"], id="train-sft"),
        pytest.param({"prepare", "sft"}, ["sft"], ["sample", "eval-sft"], id="sample-and-eval-sft"),
        pytest.param({"prepare", "sft", "sample", "eval-sft"}, ["sft"], ["rft-data", "credit"], id="credit-keeps-sft"),
        pytest.param({"prepare", "sft", "sample", "eval-sft", "credit", "rft-data"}, [],
                     ["rft", "step-pairs"], id="training-needs-no-sampler"),
        pytest.param({"prepare", "sft", "sample", "eval-sft", "credit", "rft-data", "step-pairs"}, [],
                     ["rft", "outcome-dpo", "step-dpo"], id="matched-dpo-after-step-pairs"),
        pytest.param({n for n in FULL if not n.startswith("eval")} | {"eval-sft"}, ["outcome-dpo", "rft", "step-dpo"],
                     ["eval-rft", "eval-outcome-dpo", "eval-step-dpo"], id="eval-every-policy"),
        pytest.param(set(FULL), [], [], id="done"),
    ],
)
def test_policies_served_exactly_while_a_runnable_stage_samples_them(done, serve, ready):
    nodes = stage_graph(ExperimentSpec.model_validate(MINIMAL_SPEC))
    assert policies_to_serve(nodes, done) == serve
    assert [node.name for node in runnable(nodes, done)] == ready


MINIMAL_SPEC = spec_with(data__syntheticSize=500)


def configs(**changes) -> dict:
    spec = ExperimentSpec.model_validate(spec_with(data__syntheticSize=500, **changes))
    root = storage_root(spec, "ns", "exp")
    return {node.name: stage_config(spec, node, root, SERVER if node.serves else None, experiment="exp")
            for node in stage_graph(spec)}


def test_stage_configs_wire_folders_together_and_round_trip_through_json():
    got = configs()
    root = "/data/negrl/ns/exp"
    assert got["prepare"].train_size == 500 and got["prepare"].output_dir == f"{root}/prepare"
    assert got["sft"].data == [f"{root}/prepare/train.jsonl"] and got["sft"].max_examples == 500
    assert got["sample"].questions == f"{root}/prepare/train.jsonl" and got["sample"].max_questions == 500
    assert got["credit"].samples_dir == f"{root}/sample"
    assert got["rft-data"].outputs == ["rft"]
    assert (got["step-pairs"].outputs, got["step-pairs"].credit_dir) == (["step", "outcome"], f"{root}/credit")
    assert got["rft"].model_path == f"{root}/sft/model" and got["rft"].data == [f"{root}/rft-data/rft.jsonl"]
    assert got["step-dpo"].reference_path == f"{root}/sft/model"
    assert got["step-dpo"].data == [f"{root}/step-pairs/step_pairs.jsonl"]
    assert got["outcome-dpo"].data == [f"{root}/step-pairs/outcome_pairs.jsonl"]
    unmatched = configs(stages__pairs={"matchCounts": False})
    assert unmatched["rft-data"].outputs == ["rft", "outcome"] and unmatched["step-pairs"].outputs == ["step"]
    assert unmatched["outcome-dpo"].data == [f"{root}/rft-data/outcome_pairs.jsonl"]
    assert got["eval-rft"].policy == "rft" and got["eval-rft"].questions == f"{root}/prepare/test.jsonl"
    for config in got.values():
        assert parse_stage_config(config.model_dump_json()) == config


def test_seed_is_added_to_every_stage_seed_and_trainer_overrides_apply():
    got = configs(seeds=[0, 7], trainer={"zeroStage": 3, "precision": "bf16"})
    assert got["sample-s7"].params.seed == 7 and got["credit-s7"].params.seed == 7
    assert got["sft-s7"].params.seed == 7 and got["sft-s7"].params.zero_stage == 3
    assert got["sft-s0"].params.precision == "bf16"
    own = configs(trainer={"zeroStage": 3, "precision": "bf16"}, stages__rft={"params": {"zeroStage": 1}})
    assert (own["rft"].params.zero_stage, own["rft"].params.precision) == (1, "bf16")  # the stage's own wins
    plain = configs()  # neither sets them: the defaults that run
    assert (plain["sft"].params.zero_stage, plain["sft"].params.precision) == (2, "auto")


def test_credit_rollouts_default_to_the_sampling_temperature():
    got = configs(stages__sampling={"params": {"temperature": 1.0}})
    assert got["credit"].params.temperature == 1.0
    got = configs(stages__sampling={"params": {"temperature": 1.0}}, stages__credit={"params": {"temperature": 0.3}})
    assert got["credit"].params.temperature == 0.3


def test_sweep_and_rft_from_base():
    got = configs(sweep={"sftMultipliers": [4]}, stages__rft={"init": "base"})
    assert got["prepare"].train_size == 2000 and got["sft-x4"].max_examples == 2000
    assert got["rft"].model_path == "Qwen/Qwen2.5-Math-1.5B"


def test_disabled_sft_serves_the_base_model():
    spec = ExperimentSpec.model_validate(spec_with(stages__sft=OFF))
    assert policy_model(spec, BASE_POLICY, "/r") == "Qwen/Qwen2.5-Math-1.5B"
    assert policy_model(spec, "rft", "/r") == "/r/rft/model"


def test_sampling_stages_need_a_server():
    spec = ExperimentSpec.model_validate(MINIMAL_SPEC)
    sample = next(node for node in stage_graph(spec) if node.name == "sample")
    with pytest.raises(ValueError, match="pass the server"):
        stage_config(spec, sample, "/r")


def test_storage_root_joins_mount_path_folder_namespace_and_name():
    spec = ExperimentSpec.model_validate(spec_with(storage={"claimName": "c", "mountPath": "/mnt/", "path": ""}))
    assert storage_root(spec, "team", "exp") == "/mnt/team/exp"


def test_validation_split_memorisation_eval_and_per_seed_scratch_models():
    source = {"kind": "stargraph", "degree": 2, "pathLength": 5, "nodes": 30, "validationSize": 50}
    got = configs(data__task="sequence", data__source=source, data__prompt={"template": "{question} ="},
                  model={"name": "tiny", "scratch": {"hidden": 64}}, seeds=[0, 3],
                  stages__eval={"split": "validation", "trainQuestions": 100, "maxQuestions": 40})
    root = "/data/negrl/ns/exp"
    assert got["eval-sft-s0"].questions == f"{root}/prepare/validation.jsonl"
    assert got["eval-sft-s0"].max_questions == 40
    train = got["eval-train-sft-s3"]
    assert (train.questions, train.max_questions, train.policy) == (f"{root}/prepare/train.jsonl", 100, "sft-s3")
    assert got["prepare"].scratch_seeds == [0, 3]
    assert got["sft-s0"].model_path == f"{root}/prepare/model"
    assert got["sft-s3"].model_path == f"{root}/prepare/model-s3"
    with pytest.raises(ValueError, match="validationSize"):
        ExperimentSpec.model_validate(spec_with(stages__eval={"split": "validation"}))


def test_sampling_can_cover_only_the_first_questions_of_d_syn():
    assert configs(stages__sampling={"maxQuestions": 100})["sample"].max_questions == 100
    assert configs(stages__sampling={"maxQuestions": 900})["sample"].max_questions == 500  # |D_syn| = 500


def test_every_sweep_point_consumes_its_own_data_with_a_floor_on_steps():
    got = configs(sweep={"sftMultipliers": [2, 4]}, stages__sft={"params": {"epochs": 2, "minSteps": 300}})
    for name in ("sft", "sft-x2", "sft-x4"):  # the same epochs and floor at every point, no cap
        assert (got[name].params.epochs, got[name].params.min_steps, got[name].params.max_steps) == (2.0, 300, None)
    assert [got[name].max_examples for name in ("sft", "sft-x2", "sft-x4")] == [500, 1000, 2000]


def test_a_sweep_point_that_cannot_consume_its_data_is_refused_naming_the_fields():
    # 8 x 500 = 4000 questions, but 100 steps x a global batch of 32 (micro-batch 4 x 8 GPUs) reach 3200
    with pytest.raises(ValueError, match=r"sweep\.sftMultipliers: a sweep point cannot consume its data.*maxSteps"):
        configs(sweep={"sftMultipliers": [2, 8]}, stages__sft={"params": {"maxSteps": 100}})
    ok = configs(sweep={"sftMultipliers": [2, 8]}, stages__sft={"params": {"maxSteps": 125}})  # 125 x 32 = 4000
    assert ok["sft-x8"].params.max_steps == 125


def test_select_scores_on_the_validation_split():
    got = configs(stages__sft={"select": {"everyEpochs": 0.5, "maxQuestions": 50}},
                  data__source={"kind": "arithmetic", "validationSize": 100}, data__task="arithmetic")
    selection = got["sft"].selection
    assert (selection.every_epochs, selection.max_questions, selection.task) == (0.5, 50, "arithmetic")
    assert selection.questions == "/data/negrl/ns/exp/prepare/validation.jsonl"
    assert got["rft"].selection is None
    assert parse_stage_config(got["sft"].model_dump_json()) == got["sft"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"stages__sft": {"select": {}}}, "needs a validation split"),
    ({"stages__sft": {"select": {}, "params": {"zeroStage": 3}},
      "data__source": {"kind": "arithmetic", "validationSize": 10}, "data__task": "arithmetic"}, "zeroStage 0, 1 or 2"),
    ({"data__source": {"kind": "arithmetic"}, "data__task": "gsm8k"}, "set data.task arithmetic"),
])
def test_selection_and_the_arithmetic_source_refuse_what_cannot_run(changes, message):
    with pytest.raises(ValueError, match=message):
        configs(**changes)
