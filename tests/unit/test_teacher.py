"""spec.teacher: validation messages that name the field and the fix, the synthesize node between
prepare and SFT, D_syn read by SFT (every sweep point), sampling and the pairs, and the API key kept
out of every stage config."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from negrl_operator.api.crd import crd
from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.stage_config import ServerRef
from negrl_operator.api.teacher import SynthesisParams, SynthesizeStageConfig, TeacherSpec
from negrl_operator.reconcile.graph import (
    policies_to_serve,
    policy_model,
    runnable,
    stage_config,
    stage_graph,
)
from tests.unit.test_experiment import spec_with

pytestmark = pytest.mark.unit

ROOT = "/data/negrl/default/x"
SERVER = ServerRef(base_url="http://sampler:8000/v1", model="policy")
ENDPOINT = {"baseUrl": "https://api.example.com/v1", "model": "big-teacher", "apiKeyEnv": "TEACHER_KEY",
            "apiKeySecret": {"name": "teacher-api", "key": "api-key"}, "requestsPerSecond": 2, "maxRequests": 500,
            "maxTokensTotal": 1000000}


def spec(**changes) -> ExperimentSpec:
    return ExperimentSpec.model_validate(spec_with(**changes))


@pytest.mark.parametrize("teacher, message", [
    ({}, "teacher needs exactly one of endpoint (an OpenAI-compatible API) and served"),
    ({"endpoint": ENDPOINT, "served": {"model": "m"}}, "teacher needs exactly one of endpoint"),
    ({"served": {"model": "m"}, "synthesis": {"mode": "problems"}}, "mode problems needs examples: the seed problems"),
    ({"served": {"model": "m"}, "synthesis": {"solutionTemplate": "Solve:"}},
     "solutionTemplate must contain {question}"),
    ({"served": {"model": "m"}, "synthesis": {"mode": "problems", "problemTemplate": "Write one.",
                                              "examples": [{"question": "q", "solution": "#### 1"}]}},
     "problemTemplate must contain {examples}"),
    ({"endpoint": {**ENDPOINT, "baseUrl": "api.example.com"}}, "teacher.endpoint.baseUrl: String should match"),
    ({"endpoint": {**ENDPOINT, "apiKeyEnv": "TEACHER-KEY"}}, "teacher.endpoint.apiKeyEnv: String should match"),
    ({"endpoint": {**ENDPOINT, "maxRequests": 0}}, "teacher.endpoint.maxRequests: Input should be greater than"),
    ({"endpoint": {**ENDPOINT, "apiKey": "sk-x"}}, "teacher.endpoint.apiKey: Extra inputs are not permitted"),
    ({"served": {"model": "m"}, "synthesis": {"agreement": 1.0}}, "teacher.synthesis.agreement: Input should be less"),
])
def test_invalid_teachers_name_the_field_and_the_fix(teacher, message):
    with pytest.raises(ValidationError) as error:
        spec(teacher=teacher)
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.value.errors())
    assert message in problems, problems


def test_no_teacher_keeps_the_graph_and_prepares_d_syn():
    nodes = stage_graph(spec())
    assert "synthesize" not in [node.name for node in nodes]
    sft = next(node for node in nodes if node.name == "sft")
    assert sft.needs == ("prepare",)
    assert stage_config(spec(), sft, ROOT).data == [f"{ROOT}/prepare/train.jsonl"]


def test_an_endpoint_teacher_writes_d_syn_that_sft_sampling_and_pairs_read():
    experiment = spec(teacher={"endpoint": ENDPOINT, "synthesis": {"solutionsPerQuestion": 8}},
                      data__syntheticSize=100, sweep={"sftMultipliers": [2, 4]},
                      data__source={"kind": "arithmetic", "validationSize": 50}, data__task="arithmetic",
                      stages__pairs={"chosenSource": "synthetic"})
    nodes = {node.name: node for node in stage_graph(experiment)}
    assert list(nodes)[:3] == ["prepare", "synthesize", "sft"]
    assert nodes["synthesize"].needs == ("prepare",) and nodes["synthesize"].serves is None
    d_syn = f"{ROOT}/synthesize/train.jsonl"
    for name in ("sft", "sft-x2", "sft-x4"):
        assert nodes[name].needs == ("synthesize",)
        assert stage_config(experiment, nodes[name], ROOT).data == [d_syn]
    assert nodes["sample"].needs == ("synthesize", "sft")
    assert stage_config(experiment, nodes["sample"], ROOT, SERVER).questions == d_syn
    assert stage_config(experiment, nodes["rft-data"], ROOT).questions == d_syn
    assert stage_config(experiment, nodes["step-pairs"], ROOT).questions == d_syn
    config = stage_config(experiment, nodes["synthesize"], ROOT)
    assert isinstance(config, SynthesizeStageConfig) and config.server is None
    assert config.questions == f"{ROOT}/prepare/train.jsonl"  # 4 x 100 questions: the largest sweep point
    assert config.heldout == [f"{ROOT}/prepare/test.jsonl", f"{ROOT}/prepare/validation.jsonl"]
    assert config.problems == 2 * 400 and config.params.solutions_per_question == 8
    assert (config.endpoint.base_url, config.endpoint.api_key_env, config.endpoint.max_requests) == (
        "https://api.example.com/v1", "TEACHER_KEY", 500)
    text = json.dumps(config.model_dump(mode="json"))
    assert "teacher-api" not in text and "apiKeySecret" not in text and "api_key_secret" not in text


def test_a_served_teacher_is_served_like_a_policy_before_sft():
    experiment = spec(teacher={"served": {"model": "/data/models/teacher-70b", "tensorParallel": 8},
                               "synthesis": {"mode": "problems", "problems": 64,
                                             "examples": [{"question": "q", "solution": "#### 1"}]}})
    nodes = stage_graph(experiment)
    synthesize = next(node for node in nodes if node.name == "synthesize")
    assert synthesize.serves == "teacher"
    assert [node.name for node in runnable(nodes, {"prepare"})] == ["synthesize"]
    assert policies_to_serve(nodes, {"prepare"}) == ["teacher"]
    assert policies_to_serve(nodes, {"prepare", "synthesize"}) == []  # scaled down once D_syn is written
    assert policy_model(experiment, "teacher", ROOT) == "/data/models/teacher-70b"
    config = stage_config(experiment, synthesize, ROOT, SERVER)
    assert config.server == SERVER and config.endpoint is None and config.problems == 64
    assert config.heldout == [f"{ROOT}/prepare/test.jsonl"]  # no validation split
    with pytest.raises(ValueError, match="pass the server serving it"):
        stage_config(experiment, synthesize, ROOT)


def test_stage_config_needs_exactly_one_teacher():
    common = {"output_dir": "o", "task": "gsm8k", "questions": "q"}
    with pytest.raises(ValidationError, match="set exactly one of endpoint and server"):
        SynthesizeStageConfig(**common)
    with pytest.raises(ValidationError, match="set exactly one of endpoint and server"):
        SynthesizeStageConfig(**common, server=SERVER, endpoint={"base_url": "http://x/v1", "model": "m"})


def test_the_crd_documents_the_teacher_and_checks_its_rules():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["teacher"]
    rules = [rule["rule"] for rule in schema["x-kubernetes-validations"]]
    assert rules == ["has(self.endpoint) != has(self.served)"]
    synthesis = schema["properties"]["synthesis"]
    assert "mode problems needs examples" in synthesis["x-kubernetes-validations"][0]["message"]
    endpoint = schema["properties"]["endpoint"]["properties"]
    assert "Secret holding the API key" in endpoint["apiKeySecret"]["description"]
    assert set(TeacherSpec.model_fields) == {"endpoint", "served", "synthesis"}
    assert SynthesisParams().mode == "solutions"


def negrl_run_events(experiment, tmp_path, monkeypatch) -> list[tuple]:
    """What `negrl run` does, in order: servers started (policy, weights, model length) and stopped,
    stages run (`cached`: through the stage cache); no process starts."""
    from negrl_operator.local import runner

    events = []

    class Server:
        def __init__(self, policy):
            self.base_url, self.model = f"http://127.0.0.1:1/{policy}/v1", policy

        def stop(self):
            events.append(("stop", self.model))

    def start(self, policy, model_dir, max_model_len):
        events.append(("start", policy, model_dir, max_model_len))
        return Server(policy)

    def stage(how):
        def run(node, config, workdir, relay=None):
            events.append((how, node.name, config.server.model if getattr(config, "server", None) else None))
            return {}
        return run

    class View:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(runner.LocalServers, "_start", start)
    monkeypatch.setattr(runner, "run_stage", stage("run"))
    monkeypatch.setattr(runner, "run_cached", stage("cached"))
    runner.run_experiment(experiment, tmp_path, "vllm", View())
    return events


def test_negrl_run_serves_a_served_teacher_only_while_synthesize_runs(tmp_path, monkeypatch):
    from negrl_operator.api.experiment import NegRLExperiment

    off = {"enabled": False}
    experiment = NegRLExperiment.model_validate({
        "apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment", "metadata": {"name": "teach"},
        "spec": spec_with(teacher={"served": {"model": "/models/teacher"}},
                          stages={name: off for name in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo", "eval")}),
    })
    assert negrl_run_events(experiment, tmp_path, monkeypatch) == [
        ("run", "prepare", None), ("start", "teacher", "/models/teacher", 4096), ("run", "synthesize", "teacher"),
        ("stop", "teacher"), ("run", "sft", None)]
