"""A teacher the experiment trains itself (teacher.served.scratch, #22): the CPU stand-in for a
capable model. A `teacher-sft` stage trains a scratch model on the arithmetic task's pretrain
bucket; the synthesize stage serves what it wrote."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.stage_config import (
    PrepareStageConfig,
    PretrainDataSpec,
    ScratchModelSpec,
    ServerRef,
    TrainStageConfig,
    parse_stage_config,
)
from negrl_operator.api.teacher import TeacherServedSpec
from negrl_operator.local.runner import CACHED_ROLES
from negrl_operator.reconcile.graph import (
    policies_to_serve,
    policy_model,
    runnable,
    stage_config,
    stage_graph,
)
from negrl_operator.reconcile.manifest import Owner, stage_children
from negrl_operator.reconcile.serving import serving
from negrl_sampler.arithmetic import split_of
from negrl_sampler.stages.prepare import prepare
from tests.unit.test_experiment import spec_with
from tests.unit.test_teacher import negrl_run_events

pytestmark = pytest.mark.unit

ROOT = "/data/exp"
SERVER = ServerRef(base_url="http://127.0.0.1:8000/v1", model="teacher")
TRAINING = {"examples": 9, "chainLengths": [4], "maxValue": 30,
            "params": {"learningRate": 0.002, "epochs": 1, "microBatchSize": 4, "maxLength": 160}}
SCRATCH = {"hidden": 256, "layers": 4, "heads": 4, "maxPositions": 160, "training": TRAINING}
ARITHMETIC = {"task": "arithmetic", "syntheticSize": 10, "source": {"kind": "arithmetic", "maxValue": 50}}
STUDENT = {"name": "student", "scratch": {"hidden": 64}}
OFF = {"enabled": False}
ONLY_SFT = {name: OFF for name in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo")}


def with_teacher(served=None, **changes) -> ExperimentSpec:
    served = {"scratch": SCRATCH} if served is None else served
    return ExperimentSpec.model_validate(spec_with(**{
        "model": STUDENT, "data": ARITHMETIC, "stages": ONLY_SFT, "teacher": {"served": served}, **changes}))


def node_named(spec: ExperimentSpec, name: str):
    return next(node for node in stage_graph(spec) if node.name == name)


@pytest.mark.parametrize(("served", "changes", "message"), [
    pytest.param({"model": "/m", "scratch": SCRATCH}, {}, "teacher.served needs exactly one of model (weights to "
                 "load) and scratch", id="both"),
    pytest.param({"replicas": 2}, {}, "teacher.served needs exactly one of model", id="neither"),
    pytest.param({"scratch": SCRATCH}, {"data": {"task": "sequence", "source": {"kind": "stargraph"}}},
                 "a scratch teacher trains on the arithmetic task's pretrain bucket, so it needs data.source.kind "
                 "arithmetic", id="not-arithmetic"),
    pytest.param({"scratch": {**SCRATCH, "training": {**TRAINING, "maxValue": 51}}}, {},
                 "must be at most data.source.maxValue", id="range-above-the-sources"),
    pytest.param({"scratch": {**SCRATCH, "training": {"examples": 9}}}, {}, "chainLengths", id="no-chain-lengths"),
])
def test_invalid_scratch_teachers_name_the_field_and_the_fix(served, changes, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with_teacher(served, **changes)


def test_the_teacher_is_trained_after_prepare_and_served_for_synthesize_only():
    spec = with_teacher()
    nodes = stage_graph(spec)
    assert [node.name for node in nodes][:4] == ["prepare", "teacher-sft", "synthesize", "sft"]
    teacher, synthesize = node_named(spec, "teacher-sft"), node_named(spec, "synthesize")
    assert (teacher.kind, teacher.needs, teacher.serves) == ("train", ("prepare",), None)
    assert (synthesize.needs, synthesize.serves) == (("prepare", "teacher-sft"), "teacher")
    assert [node.name for node in runnable(nodes, {"prepare"})] == ["teacher-sft"]
    assert policies_to_serve(nodes, {"prepare"}) == []  # nothing to serve while the teacher trains
    assert policies_to_serve(nodes, {"prepare", "teacher-sft"}) == ["teacher"]
    assert policy_model(spec, "teacher", ROOT) == "/data/exp/teacher-sft/model"
    assert "teacher-sft" in CACHED_ROLES  # trained once per machine by `negrl run`


def test_teacher_sft_trains_the_prepared_teacher_on_its_own_family():
    spec = with_teacher(trainer={"gpusPerNode": 0, "zeroStage": 0, "precision": "fp32"})
    config = stage_config(spec, node_named(spec, "teacher-sft"), ROOT)
    assert isinstance(config, TrainStageConfig)
    assert (config.stage, config.model_path, config.data, config.output_dir) == (
        "sft", "/data/exp/prepare/teacher-model", ["/data/exp/prepare/teacher.jsonl"], "/data/exp/teacher-sft")
    params = config.params
    assert (params.learning_rate, params.epochs, params.micro_batch_size, params.precision) == (0.002, 1.0, 4, "fp32")
    assert (config.selection, config.max_examples) == (None, None)
    assert parse_stage_config(config.model_dump_json()) == config


def test_prepare_builds_the_teacher_beside_the_student():
    config = stage_config(with_teacher(), node_named(with_teacher(), "prepare"), ROOT)
    assert config.teacher_model == ScratchModelSpec(hidden=256, layers=4, heads=4, max_positions=160)
    assert config.teacher_data == PretrainDataSpec(examples=9, chain_lengths=[4], max_value=30)
    assert config.scratch_model.hidden == 64 and config.pretrain is None
    assert parse_stage_config(config.model_dump_json()) == config
    unchanged = json.loads(stage_config(with_teacher({"model": "/m"}), node_named(with_teacher(), "prepare"),
                                        ROOT).model_dump_json())
    assert "teacherModel" not in unchanged and "teacherData" not in unchanged  # older configs hash as before


@pytest.mark.parametrize(("max_model_len", "expected"), [(4096, 160), (128, 128)])
def test_a_scratch_teachers_positions_cap_its_model_length(max_model_len, expected):
    spec = with_teacher({"scratch": SCRATCH, "maxModelLen": max_model_len})
    assert serving(spec, "teacher").max_model_len == expected
    assert TeacherServedSpec(model="/m", max_model_len=max_model_len).model_len() == max_model_len


def test_the_cluster_renders_teacher_sft_as_a_trainer_job():
    spec = with_teacher(trainer={"gpusPerNode": 1}, storage={"claimName": "negrl-data"})
    node = node_named(spec, "teacher-sft")
    config_map, job = stage_children(Owner("exp", "team", "uid-1"), spec, node, stage_config(spec, node, ROOT))
    assert (job["kind"], job["metadata"]["name"]) == ("Job", "exp-trainer-teacher-sft")
    assert json.loads(config_map["data"]["stage.json"])["data"] == ["/data/exp/prepare/teacher.jsonl"]


def test_prepare_writes_the_teacher_and_a_family_apart_from_the_students(tmp_path):
    config = PrepareStageConfig(
        output_dir=str(tmp_path), task="arithmetic",
        source={"kind": "arithmetic", "trainSize": 8, "testSize": 4, "validationSize": 4, "quantities": 2},
        scratch_model={"hidden": 64, "layers": 1, "heads": 1}, pretrain={"examples": 40, "chainLengths": [3]},
        teacher_model={"hidden": 128, "layers": 1, "heads": 2},
        teacher_data={"examples": 40, "chainLengths": [3], "maxValue": 30})
    summary = prepare(config)
    assert (summary["teacher"], summary["pretrain"]) == (40, 40)
    family = [json.loads(line) for line in (tmp_path / "teacher.jsonl").read_text().splitlines()]
    student = {json.loads(line)["question"] for line in (tmp_path / "pretrain.jsonl").read_text().splitlines()}
    assert all(split_of(q["question"]) == "pretrain" and q["id"].startswith("teacher-c3-") for q in family)
    assert not student & {q["question"] for q in family}  # another stream of the bucket
    numbers = [int(word) for q in family for word in q["solution"].split() if word.isdigit()]
    assert max(numbers) <= 30
    teacher, base = (json.loads((tmp_path / name / "config.json").read_text()) for name in ("teacher-model", "model"))
    assert (teacher["hidden_size"], base["hidden_size"]) == (128, 64)
    vocab = [json.loads((tmp_path / name / "tokenizer.json").read_text())["model"]["vocab"]
             for name in ("teacher-model", "model")]
    assert vocab[0] == vocab[1]  # one word tokenizer: the teacher's text is the student's


def test_negrl_run_trains_the_teacher_through_the_cache_then_serves_what_it_wrote(tmp_path, monkeypatch):
    from negrl_operator.api.experiment import NegRLExperiment

    off = {name: OFF for name in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo", "eval")}
    experiment = NegRLExperiment.model_validate({
        "apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment", "metadata": {"name": "teach"},
        "spec": spec_with(model=STUDENT, data=ARITHMETIC, stages=off, teacher={"served": {"scratch": SCRATCH}}),
    })
    assert negrl_run_events(experiment, tmp_path, monkeypatch) == [
        ("run", "prepare", None), ("cached", "teacher-sft", None),
        ("start", "teacher", f"{tmp_path}/artifacts/teacher-sft/model", 160),
        ("run", "synthesize", "teacher"), ("stop", "teacher"), ("run", "sft", None)]


def test_synthesize_verifies_arithmetic_lines_and_refuses_an_empty_d_syn_that_sft_would_read():
    spec = with_teacher()
    config = stage_config(spec, node_named(spec, "synthesize"), ROOT, SERVER)
    assert (config.check_lines, config.fail_if_empty) == (True, True)
    alone = with_teacher(stages={**ONLY_SFT, "sft": OFF, "eval": OFF})  # nothing reads D_syn
    assert stage_config(alone, node_named(alone, "synthesize"), ROOT, SERVER).fail_if_empty is False
    served = with_teacher({"model": "/m"}, data={"task": "gsm8k", "source": {"kind": "gsm8k-jsonl",
                                                 "trainPath": "/d/train.jsonl", "testPath": "/d/test.jsonl"}},
                          model={"name": "m"})
    assert stage_config(served, node_named(served, "synthesize"), ROOT, SERVER).check_lines is False
