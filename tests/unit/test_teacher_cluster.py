"""spec.teacher on a cluster (#22, step 2): a served teacher is a vLLM Deployment of its own
(`<experiment>-teacher`: its size, tensor parallelism, placement and Kueue queue) that exists only
while the synthesize stage runs; the stage is an Indexed Job of worker pods, an endpoint's API key
reaches them only as a secretKeyRef; the stage's figures reach the status, Prometheus and the report;
the example manifests are valid cluster experiments."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from rich.console import Console

from negrl_operator.api.crd import crd
from negrl_operator.api.experiment import ClusterExperimentSpec, ExperimentSpec, NegRLExperiment
from negrl_operator.api.status import ExperimentResults, ExperimentStatus, SynthesisResult
from negrl_operator.api.teacher import STAGE_POD_ENV, EndpointParams
from negrl_operator.controller.metrics import OperatorMetrics
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import PodReport
from negrl_operator.reconcile.plan import ChildRef
from negrl_operator.reconcile.serving import sampler_deployment, sampler_service
from negrl_operator.report.writer import write_report
from tests.unit.test_experiment import spec_with
from tests.unit.test_plan import SUMMARIES, Run, applied
from tests.unit.test_writer import RIGHT, evaluation
from tests.unit.test_writer import SPEC as REPORT_SPEC

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OWNER = Owner("exp", "team", "uid-1")
SERVED = {"model": "/data/models/t70b", "tensorParallel": 8, "maxConcurrency": 96, "gpuMemoryUtilization": 0.92,
          "startupTimeoutS": 3600, "extraArgs": ["--dtype", "bfloat16"],
          "resources": {"requests": {"cpu": 32, "memory": "320Gi"}}}
TEACHER_PLACEMENT = {"nodeSelector": {"negrl.io/pool": "teacher"}, "priorityClassName": "ml-serving",
                     "tolerations": [{"key": "negrl.io/teacher", "operator": "Exists", "effect": "NoSchedule"}],
                     "queueName": "team-a-teacher"}
ENDPOINT = {"baseUrl": "https://api.example.com/v1", "model": "big", "apiKeyEnv": "TEACHER_KEY",
            "apiKeySecret": {"name": "teacher-api", "key": "api-key"}, "requestsPerSecond": 2, "maxConcurrency": 8,
            "maxRequests": 500, "maxTokensTotal": 1000000}
# What the two synthesize shards report (the keys `negrl synthesize` writes); shard 1 finished last
# and wrote D_syn. Merged: 11 requests, 2500 tokens, 275 tokens/s, 18 of 40 accepted (0.45, not the
# sum 0.9 of the shards' own rates), 9 duplicates, 3600 tokens paid, 9 records.
SHARDS = [
    {"stage": "synthesize", "shard": "0/2", "units": 5, "requests": 6, "prompt_tokens": 600, "generated_tokens": 1500,
     "generated": 20, "accepted": 12, "kept": 5, "rejected": 8, "duplicates": 7, "surplus": 0, "contaminated": 0,
     "disagreed": 0, "empty": 0, "run_seconds": 10.0, "run_generated_tokens": 1500, "acceptance_rate": 0.6,
     "tokens_per_s": 150.0, "cost_tokens": 2100, "complete": False, "request_errors": 0},
    {"stage": "synthesize", "shard": "1/2", "units": 5, "requests": 5, "prompt_tokens": 500, "generated_tokens": 1000,
     "generated": 20, "accepted": 6, "kept": 4, "rejected": 14, "duplicates": 2, "surplus": 0, "contaminated": 0,
     "disagreed": 0, "empty": 0, "run_seconds": 8.0, "run_generated_tokens": 1000, "acceptance_rate": 0.3,
     "tokens_per_s": 125.0, "cost_tokens": 1500, "complete": True, "request_errors": 0, "dsyn_records": 9,
     "duplicate_problems": 0, "dsyn_path": "/data/x/synthesize/train.jsonl"},
]
MERGED = SynthesisResult(requests=11, generated_tokens=2500, tokens_per_s=275.0, acceptance_rate=0.45, duplicates=9,
                         contaminated=0, cost_tokens=3600, examples=9)


def served_spec(served: dict = SERVED) -> ExperimentSpec:
    return ExperimentSpec.model_validate(spec_with(
        teacher={"served": served}, sampler={"extraArgs": ["--enforce-eager"]},
        scheduling={"teacher": TEACHER_PLACEMENT, "sampler": {"nodeSelector": {"negrl.io/pool": "policies"}}}))


def test_a_served_teacher_is_a_deployment_of_its_own_size_and_placement():
    deployment = sampler_deployment(OWNER, served_spec(), "teacher", "/data/models/t70b", 1)
    meta, pod = deployment["metadata"], deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert meta["name"] == "exp-teacher" and deployment["spec"]["replicas"] == 1
    assert meta["labels"]["app.kubernetes.io/component"] == "teacher" and meta["labels"]["negrl.io/policy"] == "teacher"
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] \
        == "team-a-teacher"
    assert container["image"] == "vllm/vllm-openai:v0.32.0"  # sampler.image: the teacher sets none
    assert container["args"] == [  # the teacher's own flags; sampler.extraArgs are not the teacher's
        "--model", "/data/models/t70b", "--served-model-name", "teacher", "--host", "0.0.0.0", "--port", "8000",
        "--tensor-parallel-size", "8", "--max-model-len", "4096", "--enable-prefix-caching",
        "--gpu-memory-utilization", "0.92", "--dtype", "bfloat16"]
    assert container["resources"] == {"requests": {"cpu": "32", "memory": "320Gi"}, "limits": {"nvidia.com/gpu": "8"}}
    assert container["startupProbe"]["failureThreshold"] == 360  # 3600 s to load, probed every 10 s
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]  # weights on the volume
    assert pod["spec"]["nodeSelector"] == {"negrl.io/pool": "teacher"}
    assert pod["spec"]["tolerations"] == [{"key": "negrl.io/teacher", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["spec"]["priorityClassName"] == "ml-serving"
    service = sampler_service(OWNER, "teacher")
    assert service["metadata"]["name"] == "exp-teacher"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_policies_samplers_keep_the_samplers_settings_beside_a_teacher():
    spec = served_spec({**SERVED, "image": "registry.example.com/vllm:big", "gpus": 4})
    teacher = sampler_deployment(OWNER, spec, "teacher", "/m", 1)["spec"]["template"]["spec"]
    sampler = sampler_deployment(OWNER, spec, "sft", "/m", 1)
    pod = sampler["spec"]["template"]["spec"]
    assert (teacher["containers"][0]["image"], teacher["containers"][0]["resources"]["limits"]) == (
        "registry.example.com/vllm:big", {"nvidia.com/gpu": "4"})
    assert sampler["metadata"]["name"] == "exp-sampler-sft"
    assert sampler["metadata"]["labels"]["app.kubernetes.io/component"] == "sampler"
    assert pod["nodeSelector"] == {"negrl.io/pool": "policies"} and "tolerations" not in pod
    args = pod["containers"][0]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "1" and args[-1] == "--enforce-eager"


def finish_synthesize(run: Run, job: str = "exp-rollout-synthesize") -> None:
    run.cluster.complete(job)
    run.cluster.pods += [PodReport(f"{job}-{i}", job, i, "Succeeded", json.dumps(summary), 0, "2025-03-01T12:05:00Z")
                         for i, summary in enumerate(SHARDS)]


def test_the_served_teacher_exists_only_while_the_synthesize_job_runs():
    run = Run(teacher={"served": SERVED}, worker={"shards": 2}, scheduling={"teacher": TEACHER_PLACEMENT})
    run.step()
    run.cluster.complete("exp-data-prepare", SUMMARIES["prepare"])
    result = run.step()
    assert applied(result) == [("Deployment", "exp-teacher"), ("Service", "exp-teacher")]
    synthesize = run.status.stage_named("synthesize")
    assert (synthesize.state, synthesize.reason) == ("Waiting", "SamplerNotReady")
    assert synthesize.message == "waiting for teacher exp-teacher to be ready (under 1m)"

    run.cluster.ready()
    result = run.step()
    assert applied(result) == [("ConfigMap", "exp-config-synthesize"), ("Job", "exp-rollout-synthesize")]
    config = json.loads(run.cluster.objects[("ConfigMap", "exp-config-synthesize")]["data"]["stage.json"])
    assert config["server"]["baseUrl"] == "http://exp-teacher.team.svc:8000/v1"
    assert (config["server"]["model"], config["server"]["maxConcurrency"], config["endpoint"]) == ("teacher", 96, None)
    job = run.cluster.objects[("Job", "exp-rollout-synthesize")]
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "negrl", "synthesize", "--config", "/etc/negrl/stage.json", "--shard", "$(JOB_COMPLETION_INDEX)/2"]
    assert "suspend" not in job["spec"]  # the worker's queue, not the teacher's, would queue it

    finish_synthesize(run)
    result = run.step()
    assert run.state("synthesize") == "Succeeded" and applied(result)[-1] == ("Job", "exp-trainer-sft")
    assert {ChildRef("Deployment", "exp-teacher"), ChildRef("Service", "exp-teacher")} <= set(result.delete)
    assert run.status.results.synthesis == MERGED
    summary = run.status.stage_named("synthesize").summary
    assert (summary["acceptanceRate"], summary["tokensPerS"], summary["dsynRecords"]) == (0.45, 275.0, 9)
    sft = json.loads(run.cluster.objects[("ConfigMap", "exp-config-sft")]["data"]["stage.json"])
    assert sft["data"] == ["/data/negrl/team/exp/uid-1/synthesize/train.jsonl"]  # D_syn is the teacher's


def test_a_suspended_experiment_scales_its_teacher_to_zero():
    run = Run(teacher={"served": {**SERVED, "replicas": 2}})
    run.step()
    run.cluster.complete("exp-data-prepare", SUMMARIES["prepare"])
    run.step()
    assert run.cluster.objects[("Deployment", "exp-teacher")]["spec"]["replicas"] == 2
    run.change(teacher={"served": {**SERVED, "replicas": 2}}, suspend=True)
    run.step()
    assert run.cluster.objects[("Deployment", "exp-teacher")]["spec"]["replicas"] == 0


def test_an_endpoint_teachers_key_reaches_only_the_synthesize_pods_as_a_secret_reference():
    run = Run(teacher={"endpoint": ENDPOINT}, worker={"shards": 2})
    run.step()
    run.cluster.complete("exp-data-prepare", SUMMARIES["prepare"])
    result = run.step()
    assert applied(result) == [("ConfigMap", "exp-config-synthesize"), ("Job", "exp-rollout-synthesize")]  # no server
    env = run.cluster.objects[("Job", "exp-rollout-synthesize")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "TEACHER_KEY", "valueFrom": {"secretKeyRef": {"name": "teacher-api", "key": "api-key"}}} in env
    prepare_env = run.cluster.objects[("Job", "exp-data-prepare")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all(item["name"] != "TEACHER_KEY" for item in prepare_env)
    text = run.cluster.objects[("ConfigMap", "exp-config-synthesize")]["data"]["stage.json"]
    assert "teacher-api" not in text and "api-key" not in text and "Secret" not in text
    endpoint = json.loads(text)["endpoint"]  # each of the 2 pods gets half of the stage's limits
    assert (endpoint["apiKeyEnv"], endpoint["requestsPerSecond"], endpoint["maxConcurrency"],
            endpoint["maxRequests"], endpoint["maxTokensTotal"]) == ("TEACHER_KEY", 1.0, 4, 250, 500000)
    assert "teacher-api" not in run.status.model_dump_json()


@pytest.mark.parametrize("endpoint, retries", [
    ({**ENDPOINT, "maxRequests": None, "maxTokensTotal": None}, 2),  # worker.backoffLimit
    ({**ENDPOINT, "maxTokensTotal": None}, 0),  # a retried pod would spend its request cap again
    ({**ENDPOINT, "maxRequests": None}, 0),
])
def test_a_capped_endpoint_teachers_pods_are_not_retried(endpoint, retries):
    run = Run(teacher={"endpoint": endpoint}, worker={"shards": 2, "backoffLimit": 2})
    run.step()
    run.cluster.complete("exp-data-prepare", SUMMARIES["prepare"])
    run.step()
    job = run.cluster.objects[("Job", "exp-rollout-synthesize")]["spec"]
    assert (job["backoffLimitPerIndex"], job["maxFailedIndexes"]) == (retries, 0)
    assert run.cluster.objects[("Job", "exp-data-prepare")]["spec"]["backoffLimit"] == 2


def test_the_keys_variable_cannot_replace_one_the_stage_pods_have():
    with pytest.raises(ValueError, match=r"apiKeyEnv must not be a variable the stage pods already have \(HOME, "):
        ExperimentSpec.model_validate(spec_with(teacher={"endpoint": {**ENDPOINT, "apiKeyEnv": "HOME"}}))
    spec = ExperimentSpec.model_validate(spec_with(
        teacher={"endpoint": ENDPOINT}, model={"name": "m", "tokenSecret": {"name": "hf"}},
        tracking={"mlflowCredentials": {name: {"name": "ml"} for name in ("token", "username", "password")}}))
    run = Run()
    run.spec = spec
    run.step()
    env = run.cluster.objects[("Job", "exp-data-prepare")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {item["name"] for item in env} | {"PATH"} == set(STAGE_POD_ENV)  # every one the operator sets


@pytest.mark.parametrize("pods, limits, share", [
    (1, (2.0, 8, 500, 1000000), (2.0, 8, 500, 1000000)),
    (3, (3.0, 8, 500, None), (1.0, 2, 166, None)),  # rounded down: 3 x 166 = 498 <= 500
    (4, (None, 2, 3, 10), (None, 1, 1, 2)),  # at least 1 each
])
def test_each_synthesize_pod_gets_its_share_of_the_endpoints_limits(pods, limits, share):
    rate, concurrency, requests, tokens = limits
    params = EndpointParams(base_url="https://x/v1", model="m", requests_per_second=rate,
                            max_concurrency=concurrency, max_requests=requests, max_tokens_total=tokens)
    part = params.share(pods)
    assert (part.requests_per_second, part.max_concurrency, part.max_requests, part.max_tokens_total) == share


def test_the_synthesis_figures_are_prometheus_gauges_until_the_experiment_goes():
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.record("team", "exp", ExperimentStatus(phase="Running", results=ExperimentResults(synthesis=MERGED)))
    labels = {"namespace": "team", "experiment": "exp"}
    value = metrics.registry.get_sample_value
    assert [value(name, labels) for name in (
        "negrl_operator_synthesis_requests", "negrl_operator_synthesis_generated_tokens",
        "negrl_operator_synthesis_generated_tokens_per_second", "negrl_operator_synthesis_acceptance_ratio",
        "negrl_operator_synthesis_cost_tokens", "negrl_operator_synthesis_examples")] == [11, 2500, 275, 0.45, 3600, 9]
    assert value("negrl_operator_synthesis_dropped", {**labels, "reason": "duplicates"}) == 9
    assert value("negrl_operator_synthesis_dropped", {**labels, "reason": "contaminated"}) == 0
    metrics.forget("team", "exp")
    assert value("negrl_operator_synthesis_requests", labels) is None


def test_the_crd_places_the_teacher_and_reports_its_figures():
    versions = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    teacher = versions["spec"]["properties"]["scheduling"]["properties"]["teacher"]["properties"]
    assert teacher["queueName"]["maxLength"] == 63 and "nodeSelector" in teacher and "tolerations" in teacher
    synthesis = versions["status"]["properties"]["results"]["properties"]["synthesis"]["properties"]
    assert set(synthesis) == {"requests", "generatedTokens", "tokensPerS", "acceptanceRate", "duplicates",
                              "contaminated", "costTokens", "examples"}
    root_rules = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    assert all("teacher" not in rule["rule"] for rule in root_rules)  # a cluster runs teachers


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def test_the_gpu_teacher_example_serves_a_70b_class_teacher_on_its_own_pool():
    doc = example("teacher-gpu.yaml")
    spec = ClusterExperimentSpec.model_validate(doc["spec"])
    NegRLExperiment.model_validate(doc)
    deployment = sampler_deployment(Owner(doc["metadata"]["name"], "default", "u"), spec, "teacher",
                                    spec.teacher.served.model, spec.teacher.served.replicas)
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "8"
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    assert pod["nodeSelector"] == {"negrl.io/pool": "teacher"}
    assert deployment["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-teacher"
    assert spec.teacher.served.model.startswith(spec.storage.mount_path + "/")  # weights on the volume


def test_the_endpoint_teacher_example_takes_its_key_from_a_secret():
    doc = example("teacher-endpoint.yaml")
    spec = ClusterExperimentSpec.model_validate(doc["spec"])
    NegRLExperiment.model_validate(doc)
    endpoint = spec.teacher.endpoint
    assert (endpoint.api_key_secret.name, endpoint.api_key_secret.key, endpoint.api_key_env) == (
        "teacher-api", "api-key", "TEACHER_API_KEY")
    assert spec.teacher.served is None and spec.worker.shards == 2


def test_the_report_shows_the_synthesize_summary(tmp_path):
    for policy in RIGHT:
        for seed in (0, 1):
            evaluation(tmp_path, policy, seed)
    experiment = NegRLExperiment.model_validate({"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
                                                 "metadata": {"name": "e"}, "spec": REPORT_SPEC})
    summaries = {f"eval-{policy}-s{seed}": {"pass_at_1": len(right) / 4} for policy, right in RIGHT.items()
                 for seed in (0, 1)}
    summaries["synthesize"] = SHARDS[1]
    write_report(experiment, summaries, tmp_path, 60.0, Console(file=io.StringIO()))
    report = (tmp_path / "report.md").read_text()
    stage_summaries = json.loads(report.split("## Stage summaries\n")[1].split("```json\n")[1].split("```")[0])
    assert stage_summaries["synthesize"]["acceptance_rate"] == 0.3 and stage_summaries["synthesize"]["dsyn_records"] == 9
