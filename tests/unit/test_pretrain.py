"""The shared pretrained base (spec.model.scratch.pretrain): its spec, its place in the stage graph,
its stage config, the pretraining family the prepare stage writes, and the operator's plan for it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.stage_config import (
    PrepareStageConfig,
    PretrainDataSpec,
    ScratchModelSpec,
    TrainStageConfig,
    parse_stage_config,
)
from negrl_operator.reconcile.graph import base_model, policy_model, stage_config, stage_graph
from negrl_operator.reconcile.manifest import Owner, stage_children
from negrl_sampler.arithmetic import parse_problem, split_of
from negrl_sampler.lexicon import lexicon_words, nonce_verbs
from negrl_sampler.stages.prepare import prepare
from tests.unit.test_experiment import spec_with
from tests.unit.test_plan import Run

pytestmark = pytest.mark.unit

ROOT = "/data/exp"
PRETRAIN = {"examples": 7, "chainLengths": [2, 5],
            "params": {"learningRate": 0.001, "epochs": 2, "microBatchSize": 8, "maxLength": 128, "minSteps": 30,
                       "schedule": "constant"}}
SCRATCH_MODEL = {"name": "tiny", "scratch": {"hidden": 64, "pretrain": PRETRAIN}}
ARITHMETIC = {"task": "arithmetic", "syntheticSize": 100, "source": {"kind": "arithmetic", "validationSize": 10}}
OFF = {"enabled": False}
ONLY_SFT = {name: OFF for name in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo")}


def pretrained(**changes) -> ExperimentSpec:
    return ExperimentSpec.model_validate(spec_with(**{"model": SCRATCH_MODEL, "data": ARITHMETIC, **changes}))


def node_named(spec: ExperimentSpec, name: str):
    return next(node for node in stage_graph(spec) if node.name == name)


# ---- the spec ----

@pytest.mark.parametrize(("examples", "lengths", "shares"), [
    pytest.param(7, [2, 5], [(2, 4), (5, 3)], id="remainder-to-the-first"),
    pytest.param(11, [6, 2, 8], [(6, 5), (2, 3), (8, 3)], id="three-lengths-in-the-order-given"),
    pytest.param(1, [3, 4], [(3, 1), (4, 0)], id="fewer-examples-than-lengths"),
    pytest.param(12, [12], [(12, 12)], id="one-length"),
])
def test_chain_lengths_share_the_examples_equally(examples, lengths, shares):
    spec = pretrained(model={"name": "tiny", "scratch": {"pretrain": {"examples": examples, "chainLengths": lengths}}})
    pretrain = spec.model.scratch.pretrain
    assert pretrain.shares() == shares
    assert (pretrain.quantities, pretrain.interact) == (None, None)  # the source's


@pytest.mark.parametrize(("changes", "message"), [
    pytest.param({"data": {"task": "gsm8k", "source": {"kind": "gsm8k-jsonl", "trainPath": "/d/a", "testPath": "/d/b"}}},
                 "model.scratch.pretrain: pretraining uses the arithmetic task's pretrain family, so it needs "
                 "data.source.kind arithmetic", id="file-source"),
    pytest.param({"data": {"task": "sequence", "source": {"kind": "stargraph"}}},
                 "set that source or remove model.scratch.pretrain", id="star-graph"),
    pytest.param({"model__scratch__pretrain": {"examples": 10, "chainLengths": []}},
                 "model.scratch.pretrain.chainLengths\n  List should have at least 1 item", id="no-lengths"),
    pytest.param({"model__scratch__pretrain": {"examples": 10, "chainLengths": [0, 3]}},
                 "chainLengths.0\n  Input should be greater than or equal to 1", id="length-0"),
    pytest.param({"model__scratch__pretrain": {"examples": 10, "chainLengths": [13]}},
                 "chainLengths.0\n  Input should be less than or equal to 12", id="length-13"),
    pytest.param({"model__scratch__pretrain": {"examples": 10, "chainLengths": [3, 5, 3]}},
                 "chainLengths must be distinct, got [3, 5, 3]: list each length once", id="repeated-length"),
    pytest.param({"model__scratch__pretrain": {"examples": 0, "chainLengths": [3]}},
                 "examples\n  Input should be greater than or equal to 1", id="no-examples"),
    pytest.param({"model__scratch__pretrain": {"examples": 5, "chainLengths": [3], "maxValue": 51}},
                 "model.scratch.pretrain.maxValue: must be at most data.source.maxValue, since the vocabulary is "
                 "the source's: lower it or unset it", id="max-value-above-the-sources"),
    pytest.param({"model__scratch__pretrain": {"examples": 5, "chainLengths": [3], "lexicon": 1}},
                 "model.scratch.pretrain.lexicon: must be at most data.source.lexicon, since the task's verbs are "
                 "the source's: lower it, unset it or set ownVerbs", id="lexicon-above-the-sources"),
    pytest.param({"model__scratch__pretrain": {"examples": 5, "chainLengths": [3], "maxValue": 0}},
                 "maxValue\n  Input should be greater than or equal to 1", id="max-value-0"),
])
def test_invalid_pretrain_is_refused_naming_the_field(changes, message):
    doc = spec_with(model={"name": "tiny", "scratch": {"pretrain": PRETRAIN}}, data=ARITHMETIC)
    for path, value in changes.items():
        node = doc
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ExperimentSpec.model_validate(doc)


def test_the_crd_carries_both_rules_as_cel():
    from negrl_operator.api.crd import crd

    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pretrain = spec["properties"]["model"]["properties"]["scratch"]["properties"]["pretrain"]
    assert pretrain["x-kubernetes-validations"] == [{
        "rule": "self.chainLengths.all(c, self.chainLengths.exists_one(d, d == c))",
        "message": "chainLengths must be distinct: list each chain length once", "fieldPath": ".chainLengths"}]
    assert pretrain["properties"]["chainLengths"]["maxItems"] == 12
    assert pretrain["properties"]["params"]["properties"]["learningRate"]["default"] == 1e-5
    rules = {rule["fieldPath"]: rule["rule"] for rule in spec["x-kubernetes-validations"] if "fieldPath" in rule}
    assert rules[".model.scratch.pretrain"] == ("!has(self.model.scratch) || !has(self.model.scratch.pretrain) || "
                                                "self.data.source.kind == 'arithmetic'")
    assert rules[".model.scratch.pretrain.maxValue"] == (
        "!has(self.model.scratch) || !has(self.model.scratch.pretrain) || !has(self.model.scratch.pretrain.maxValue) "
        "|| self.model.scratch.pretrain.maxValue <= self.data.source.maxValue")


# ---- the graph and the stage configs ----

def test_one_pretrain_node_after_prepare_that_every_sft_of_every_seed_and_point_needs():
    spec = pretrained(seeds=[0, 1], sweep={"sftMultipliers": [2]}, stages=ONLY_SFT)
    nodes = stage_graph(spec)
    assert [(n.name, n.needs) for n in nodes] == [
        ("prepare", ()), ("pretrain", ("prepare",)),
        ("sft-s0", ("prepare", "pretrain")), ("sft-x2-s0", ("prepare", "pretrain")),
        ("eval-sft-s0", ("prepare", "sft-s0")), ("eval-sft-x2-s0", ("prepare", "sft-x2-s0")),
        ("sft-s1", ("prepare", "pretrain")), ("sft-x2-s1", ("prepare", "pretrain")),
        ("eval-sft-s1", ("prepare", "sft-s1")), ("eval-sft-x2-s1", ("prepare", "sft-x2-s1")),
    ]
    node = nodes[1]
    assert (node.kind, node.role, node.produces, node.seed, node.serves) == ("train", "pretrain", "pretrain", 0, None)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_seed_starts_from_the_shared_base(seed):
    spec = pretrained(seeds=[0, 1, 7], stages=ONLY_SFT)
    assert base_model(spec, ROOT, seed) == "/data/exp/pretrain/model"
    sft = stage_config(spec, node_named(spec, f"sft-s{seed}"), ROOT)
    assert (sft.model_path, sft.data) == ("/data/exp/pretrain/model", ["/data/exp/prepare/train.jsonl"])


def test_pretrain_config_trains_the_seed_0_scratch_model_on_the_pretraining_family():
    spec = pretrained(seeds=[3, 4], trainer={"gpusPerNode": 0, "zeroStage": 0, "precision": "fp32"},
                      stages={**ONLY_SFT, "sft": {"select": {}}})
    config = stage_config(spec, node_named(spec, "pretrain"), ROOT)
    assert isinstance(config, TrainStageConfig)
    assert (config.stage, config.model_path, config.data, config.output_dir) == (
        "sft", "/data/exp/prepare/model", ["/data/exp/prepare/pretrain.jsonl"], "/data/exp/pretrain")
    assert (config.selection, config.max_examples, config.reference_path) == (None, None, None)
    params = config.params
    assert (params.learning_rate, params.epochs, params.micro_batch_size, params.max_length, params.min_steps,
            params.schedule, params.seed) == (0.001, 2.0, 8, 128, 30, "constant", 0)
    assert (params.zero_stage, params.precision) == (0, "fp32")  # spec.trainer's, as every stage's
    assert parse_stage_config(config.model_dump_json()) == config  # what the Job validates


def test_prepare_builds_only_the_seed_0_scratch_model_and_the_pretraining_family():
    spec = pretrained(seeds=[3, 4], stages=ONLY_SFT)
    config = stage_config(spec, node_named(spec, "prepare"), ROOT)
    assert config.scratch_seeds == [0]
    assert type(config.scratch_model) is ScratchModelSpec and config.scratch_model.hidden == 64
    assert config.pretrain == PretrainDataSpec(examples=7, chain_lengths=[2, 5])  # no training hyperparameters
    assert parse_stage_config(config.model_dump_json()) == config


def test_without_pretrain_each_seed_keeps_its_own_scratch_model():
    spec = ExperimentSpec.model_validate(spec_with(model={"name": "tiny", "scratch": {}}, data=ARITHMETIC,
                                                   seeds=[0, 2], stages=ONLY_SFT))
    assert "pretrain" not in [node.name for node in stage_graph(spec)]
    assert [base_model(spec, ROOT, seed) for seed in (0, 2)] == ["/data/exp/prepare/model", "/data/exp/prepare/model-s2"]
    prepare_config = stage_config(spec, node_named(spec, "prepare"), ROOT)
    assert (prepare_config.scratch_seeds, prepare_config.pretrain) == ([0, 2], None)


def test_without_sft_the_base_policy_and_rft_from_base_wait_for_pretrain():
    spec = pretrained(stages={"sft": OFF, "rft": {"init": "base"}, "credit": OFF, "stepDpo": OFF})
    needs = {node.name: node.needs for node in stage_graph(spec)}
    assert needs["sample"] == ("prepare", "pretrain")
    assert needs["rft"] == ("rft-data", "pretrain")
    assert needs["outcome-dpo"] == ("rft-data", "pretrain")
    assert needs["eval-base"] == ("prepare", "pretrain")
    assert policy_model(spec, "base", ROOT) == "/data/exp/pretrain/model"
    assert stage_config(spec, node_named(spec, "rft"), ROOT).model_path == "/data/exp/pretrain/model"


def test_the_cluster_renders_the_pretrain_stage_as_a_trainer_job():
    spec = pretrained(stages=ONLY_SFT, trainer={"gpusPerNode": 1}, storage={"claimName": "negrl-data"})
    node = node_named(spec, "pretrain")
    config_map, job = stage_children(Owner("exp", "team", "uid-1"), spec, node, stage_config(spec, node, ROOT))
    assert (config_map["metadata"]["name"], job["kind"], job["metadata"]["name"]) == (
        "exp-config-pretrain", "Job", "exp-trainer-pretrain")
    assert json.loads(config_map["data"]["stage.json"])["data"] == ["/data/exp/prepare/pretrain.jsonl"]
    assert "activeDeadlineSeconds" not in job["spec"]


def test_the_operator_runs_pretrain_between_prepare_and_every_sft():
    run = Run(model=SCRATCH_MODEL, data=ARITHMETIC, seeds=[0, 1], stages=ONLY_SFT)
    run.step()
    assert run.cluster.jobs() == ["exp-data-prepare"]
    run.cluster.finish_running()
    run.step()
    assert run.cluster.jobs() == ["exp-data-prepare", "exp-trainer-pretrain"]  # the SFTs wait for the base
    run.cluster.finish_running()
    run.step()
    assert run.cluster.jobs() == ["exp-data-prepare", "exp-trainer-pretrain", "exp-trainer-sft-s0",
                                  "exp-trainer-sft-s1"]
    run.until("eval-sft-s1", "Succeeded")
    run.step()
    assert (run.status.phase, run.state("pretrain")) == ("Succeeded", "Succeeded")
    assert "pretrain" not in [policy.policy for policy in run.status.results.policies]


# ---- the prepare stage ----

def arithmetic_prepare(tmp_path, **pretrain) -> PrepareStageConfig:
    return PrepareStageConfig(
        output_dir=str(tmp_path), task="arithmetic",
        source={"kind": "arithmetic", "trainSize": 20, "testSize": 5, "validationSize": 5, "quantities": 3},
        pretrain={"examples": 7, "chainLengths": [2, 5], **pretrain})


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prepare_writes_the_pretraining_family_in_its_own_split(tmp_path):
    assert prepare(arithmetic_prepare(tmp_path)) == {"stage": "prepare", "train": 20, "test": 5, "validation": 5,
                                                      "pretrain": 7}
    family = lines(tmp_path / "pretrain.jsonl")
    # interleaved by the seeded shuffle, the same on every run
    assert [q["id"] for q in family] == ["pretrain-c5-0", "pretrain-c2-3", "pretrain-c2-1", "pretrain-c5-1",
                                         "pretrain-c5-2", "pretrain-c2-2", "pretrain-c2-0"]
    lengths = [len(parse_problem(q["question"]).events) for q in family]
    assert sorted(lengths) == [2, 2, 2, 2, 5, 5, 5]
    assert all(int(q["id"].split("-")[1].removeprefix("c")) == n for q, n in zip(family, lengths, strict=True))
    assert all(len(parse_problem(q["question"]).names) == 3 for q in family)  # the source's quantities
    assert all(q["answer"] == q["solution"] and q["solution"].splitlines()[-1].startswith("#### ") for q in family)
    assert {split_of(q["question"]) for q in family} == {"pretrain"}
    others = {q["question"] for name in ("train", "validation", "test") for q in lines(tmp_path / f"{name}.jsonl")}
    assert len({q["question"] for q in family}) == 7 and not others & {q["question"] for q in family}


def test_pretrain_knobs_override_the_sources(tmp_path):
    prepare(arithmetic_prepare(tmp_path, quantities=2, interact=0.0))
    family = [parse_problem(q["question"]) for q in lines(tmp_path / "pretrain.jsonl")]
    assert {len(problem.names) for problem in family} == {2}
    assert all(event.other is None for problem in family for event in problem.events)  # interact 0: no add-another


def test_a_smaller_pretraining_range_leaves_the_larger_numbers_new_to_the_base(tmp_path):
    scratch = ScratchModelSpec(hidden=64, layers=1, heads=1)
    prepare(arithmetic_prepare(tmp_path, maxValue=12).model_copy(update={"scratch_model": scratch}))
    family = [parse_problem(q["question"]) for q in lines(tmp_path / "pretrain.jsonl")]
    numbers = [int(word) for q in lines(tmp_path / "pretrain.jsonl") for word in q["solution"].split() if word.isdigit()]
    assert max(numbers) <= 12 and all(max(problem.initial) <= 12 // 3 for problem in family)
    tokenizer_words = json.loads((tmp_path / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert "▁50" in tokenizer_words and "▁51" not in tokenizer_words  # one vocabulary: the source's (maxValue 50)


def test_the_prepare_config_refuses_a_pretraining_range_above_the_sources(tmp_path):
    with pytest.raises(ValidationError, match="pretrain maxValue 60 exceeds data.source.maxValue 50: the vocabulary "
                                              "is the source's"):
        arithmetic_prepare(tmp_path, maxValue=60)


def test_a_pretraining_family_without_the_lexicon_leaves_its_verbs_new_to_the_base(tmp_path):
    config = arithmetic_prepare(tmp_path, lexicon=0)
    config = config.model_copy(update={"source": config.source.model_copy(update={"lexicon": 64}),
                                       "scratch_model": ScratchModelSpec(hidden=64, layers=1, heads=1)})
    prepare(config)
    family = [parse_problem(q["question"]) for q in lines(tmp_path / "pretrain.jsonl")]
    train = [parse_problem(q["question"]) for q in lines(tmp_path / "train.jsonl")]
    assert not any(event.verb for problem in family for event in problem.events)
    assert any(event.verb for problem in train for event in problem.events)
    tokenizer_words = json.loads((tmp_path / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert {f"▁{verb}" for verb in lexicon_words(64)} <= set(tokenizer_words)  # the source's lexicon, all of it
    assert f"▁{nonce_verbs()[64]}" not in tokenizer_words


def test_a_pretraining_family_with_verbs_of_its_own_shares_none_with_the_task(tmp_path):
    config = arithmetic_prepare(tmp_path, lexicon=32, ownVerbs=True, chainLengths=[4], examples=60)
    config = config.model_copy(update={"source": config.source.model_copy(update={"lexicon": 64}),
                                       "scratch_model": ScratchModelSpec(hidden=64, layers=1, heads=1)})
    prepare(config)
    family = {event.verb for q in lines(tmp_path / "pretrain.jsonl") for event in parse_problem(q["question"]).events}
    task = {event.verb for q in lines(tmp_path / "train.jsonl") for event in parse_problem(q["question"]).events}
    assert family - {None} and family - {None} <= set(lexicon_words(32, own=True))
    assert task - {None} <= set(lexicon_words(64)) and not (family & task) - {None}
    tokenizer_words = json.loads((tmp_path / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert {f"▁{verb}" for verb in [*lexicon_words(64), *lexicon_words(32, own=True)]} <= set(tokenizer_words)


def test_the_prepare_config_refuses_a_pretraining_lexicon_above_the_sources(tmp_path):
    with pytest.raises(ValidationError, match="pretrain lexicon 8 exceeds data.source.lexicon 0: the vocabulary "
                                              "is the source's, so its words must lie within it; lower "
                                              "model.scratch.pretrain.lexicon or unset it"):
        arithmetic_prepare(tmp_path, lexicon=8)


def test_without_pretrain_prepare_writes_no_family(tmp_path):
    config = arithmetic_prepare(tmp_path).model_copy(update={"pretrain": None})
    assert "pretrain" not in prepare(config)
    assert not (tmp_path / "pretrain.jsonl").exists()


def test_the_prepare_config_refuses_pretrain_on_other_sources(tmp_path):
    with pytest.raises(ValidationError, match="pretrain needs source kind arithmetic, got 'stargraph'"):
        PrepareStageConfig(output_dir=str(tmp_path), task="sequence", source={"kind": "stargraph"},
                           pretrain={"examples": 3, "chainLengths": [2]})
