"""Pure manifest builders: golden files plus the properties every child must have.

Regenerate the golden files after an intended change with NEGRL_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.stage_config import parse_stage_config
from negrl_operator.reconcile.graph import stage_config, stage_graph, storage_root
from negrl_operator.reconcile.manifest import (
    MAX_NAME,
    Owner,
    child_name,
    content_hash,
    job_name,
    stage_children,
    with_hash,
)
from negrl_operator.reconcile.observation import HASH_ANNOTATION
from negrl_operator.reconcile.serving import sampler_deployment, sampler_service, server_ref
from tests.unit.test_experiment import spec_with

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner("gsm8k", "team-a", "0b6f3c1e-2c3a-4a8e-9d5e-5a7c1d2e3f40")
PLACEMENT = {
    "nodeSelector": {"pool": "h100"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
    "priorityClassName": "ml", "queueName": "team-a", "podAnnotations": {"example.com/owner": "team-a"},
}
SPEC = ExperimentSpec.model_validate(spec_with(
    data__syntheticSize=1000,
    model={"name": "Qwen/Qwen2.5-Math-1.5B", "revision": "main", "tokenSecret": {"name": "hf"}},
    sampler={"tensorParallel": 2, "extraArgs": ["--dtype", "bfloat16"], "resources": {"requests": {"cpu": 4}}},
    worker={"shards": 4, "resources": {"requests": {"cpu": "2", "memory": "8Gi"}}},
    trainer={"gpusPerNode": 8, "nodes": 2, "zeroStage": 3},
    scheduling={"sampler": PLACEMENT, "trainer": PLACEMENT, "worker": {"queueName": "team-a-cpu"}},
))
MULTI_NODE = SPEC
SINGLE_NODE = SPEC.model_copy(update={"trainer": SPEC.trainer.model_copy(update={"nodes": 1})})


def children(spec: ExperimentSpec, stage: str) -> list[dict]:
    node = next(n for n in stage_graph(spec) if n.name == stage)
    root = storage_root(spec, OWNER.namespace, OWNER.name)
    server = server_ref(OWNER, node.serves) if node.serves else None
    return stage_children(OWNER, spec, node, stage_config(spec, node, root, server, OWNER.name, 9090))


CASES = {
    "prepare": lambda: children(SPEC, "prepare"),
    "sample": lambda: children(SPEC, "sample"),
    "eval-rft": lambda: children(SPEC, "eval-rft"),
    "sft-single-node": lambda: children(SINGLE_NODE, "sft"),
    "step-dpo-multi-node": lambda: children(MULTI_NODE, "step-dpo"),
    "sampler-base": lambda: [sampler_deployment(OWNER, SPEC, "base", "Qwen/Qwen2.5-Math-1.5B", 2),
                             sampler_service(OWNER, "base")],
}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the stage configs) as readable literal blocks."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    text = yaml.dump_all(CASES[case](), Dumper=_Dumper, sort_keys=True, width=120)
    assert yaml.safe_load_all(text) is not None
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("NEGRL_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; rerun with NEGRL_UPDATE_GOLDEN=1 if intended"


def all_children() -> list[dict]:
    return [manifest for build in CASES.values() for manifest in build()]


def pod_spec(manifest: dict) -> dict | None:
    return manifest["spec"]["template"]["spec"] if manifest["kind"] in ("Job", "Deployment") else None


def gpus(pod: dict) -> int:
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in pod["containers"])


def test_every_child_is_owned_labelled_and_hashed():
    for manifest in all_children():
        meta = manifest["metadata"]
        assert len(meta["name"]) <= MAX_NAME and meta["namespace"] == OWNER.namespace
        (owner,) = meta["ownerReferences"]
        assert owner["uid"] == OWNER.uid and owner["controller"] and owner["kind"] == "NegRLExperiment"
        assert meta["labels"]["app.kubernetes.io/instance"] == OWNER.name
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "negrl-operator"
        assert meta["annotations"][HASH_ANNOTATION] == with_hash(manifest)["metadata"]["annotations"][HASH_ANNOTATION]


def test_job_pods_trainers_included_are_restricted_with_a_writable_home():
    for manifest in all_children():
        pod = pod_spec(manifest)
        if pod is None:
            continue
        if gpus(pod):
            assert {v["name"] for v in pod["volumes"]} >= {"dshm", "storage"}
        if manifest["kind"] == "Deployment":  # the upstream vLLM image runs as is
            continue
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]
        assert pod["securityContext"]["runAsUser"] == 1000
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True
            assert {"name": "HOME", "value": "/tmp"} in container["env"]
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert any(m["kind"] == "Job" and gpus(pod_spec(m)) for m in all_children())  # trainers were checked


def test_gpu_counts_follow_the_spec():
    (deployment, _) = CASES["sampler-base"]()
    assert gpus(pod_spec(deployment)) == 2
    train = [m for m in CASES["sft-single-node"]() if m["kind"] == "Job"][0]
    assert gpus(pod_spec(train)) == 8 and train["spec"]["completions"] == 1


def test_scheduling_passes_through():
    for manifest in CASES["sampler-base"]()[:1] + CASES["step-dpo-multi-node"]()[2:]:
        pod = pod_spec(manifest)
        assert pod["nodeSelector"] == {"pool": "h100"} and pod["priorityClassName"] == "ml"
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
        assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert manifest["spec"]["template"]["metadata"]["annotations"] == {"example.com/owner": "team-a"}
    job = CASES["sample"]()[1]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-cpu"


def test_vllm_serves_the_policy_with_prefix_caching_and_health_probes():
    deployment, service = CASES["sampler-base"]()
    container = pod_spec(deployment)["containers"][0]
    args = container["args"]
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert args[:2] == ["--model", "Qwen/Qwen2.5-Math-1.5B"] and "--enable-prefix-caching" in args
    assert args[args.index("--served-model-name") + 1] == "base" and args[args.index("--revision") + 1] == "main"
    assert args[args.index("--tensor-parallel-size") + 1] == "2" and args[-2:] == ["--dtype", "bfloat16"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert server_ref(OWNER, "base").base_url == "http://gsm8k-sampler-base.team-a.svc:8000/v1"


def test_cpu_sampler_requests_no_gpu_and_runs_the_cpu_build_offline():
    spec = ExperimentSpec.model_validate(spec_with(data__syntheticSize=1000, sampler={"gpus": 0, "cpuKvCacheGb": 2}))
    deployment = sampler_deployment(OWNER, spec, "sft", "/data/experiments/team-a/gsm8k/sft/model", 1)
    container = pod_spec(deployment)["containers"][0]
    assert gpus(pod_spec(deployment)) == 0 and "nvidia.com/gpu" not in json.dumps(container["resources"])
    args, env = container["args"], {e["name"]: e.get("value") for e in container["env"]}
    assert args[args.index("--dtype") + 1] == "float32" and "--no-enable-chunked-prefill" in args
    assert "--gpu-memory-utilization" not in args
    assert (env["VLLM_CPU_KVCACHE_SPACE"], env["HF_HUB_OFFLINE"], env["VLLM_NO_USAGE_STATS"]) == ("2", "1", "1")
    # a GPU sampler of a hub model: online, no CPU settings
    gpu = {e["name"] for e in pod_spec(CASES["sampler-base"]()[0])["containers"][0]["env"]}
    assert not gpu & {"HF_HUB_OFFLINE", "VLLM_CPU_KVCACHE_SPACE"}


def test_rollout_jobs_shard_by_completion_index():
    config_map, job = CASES["sample"]()
    command = pod_spec(job)["containers"][0]["command"]
    assert command == ["negrl", "sample", "--config", "/etc/negrl/stage.json", "--shard", "$(JOB_COMPLETION_INDEX)/4"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    config = parse_stage_config(config_map["data"]["stage.json"])
    assert config.shard_count == 4 and config.metrics_port == 9090 and config.experiment == "gsm8k"


def test_multi_node_training_uses_an_indexed_job_and_a_headless_service():
    config_map, service, job = CASES["step-dpo-multi-node"]()
    assert service["spec"]["clusterIP"] == "None" and job["spec"]["completions"] == 2
    pod = pod_spec(job)
    assert pod["subdomain"] == service["metadata"]["name"]
    command = pod["containers"][0]["command"]
    name = job["metadata"]["name"]
    assert command[:7] == ["torchrun", "--nproc-per-node=8", "--nnodes=2", "--rdzv-backend=c10d",
                           f"--rdzv-endpoint={name}-0.{service['metadata']['name']}.team-a.svc:29500",
                           f"--rdzv-id={name}", "--max-restarts=3"]
    assert not any(arg.startswith(("--node-rank", "--master-addr")) for arg in command)  # no static rendezvous
    assert service["spec"]["selector"] == job["spec"]["template"]["metadata"]["labels"]
    assert parse_stage_config(config_map["data"]["stage.json"]).params.zero_stage == 3


def test_long_names_are_cut_with_a_hash():
    long = "x" * 60
    first, second = child_name(long, "trainer", "sft"), child_name(long, "trainer", "rft")
    assert len(first) <= MAX_NAME and first != second
    assert child_name("exp", "sampler", "sft") == "exp-sampler-sft"
    node = next(n for n in stage_graph(SPEC) if n.name == "eval-step-dpo")
    assert job_name("exp", node) == "exp-eval-step-dpo"


def test_hash_ignores_itself_and_tracks_content():
    manifest = CASES["sampler-base"]()[1]
    assert with_hash(manifest) == manifest
    changed = json.loads(json.dumps(manifest))
    changed["spec"]["ports"][0]["port"] = 9000
    assert with_hash(changed)["metadata"]["annotations"][HASH_ANNOTATION] != content_hash(manifest)


def test_mlflow_credentials_reach_stage_pods_as_secret_refs_and_stay_out_of_configs():
    spec = ExperimentSpec.model_validate(spec_with(tracking={
        "mlflowUri": "http://mlflow.mlflow:5000", "mlflowExperiment": "team-a",
        "mlflowCredentials": {"username": {"name": "mlflow", "key": "user"}, "password": {"name": "mlflow", "key": "pw"}}}))
    wanted = [{"name": "MLFLOW_TRACKING_USERNAME", "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "user"}}},
              {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "pw"}}}]
    for stage in ("sample", "sft"):
        config_map, job, *_ = children(spec, stage)
        env = pod_spec(job)["containers"][0]["env"]
        assert [item for item in env if item["name"].startswith("MLFLOW_")] == wanted, stage
        config = parse_stage_config(config_map["data"]["stage.json"])
        assert config.tracking.mlflow_uri == "http://mlflow.mlflow:5000" and config.tracking.mlflow_experiment == "team-a"
        assert "mlflowCredentials" not in config_map["data"]["stage.json"]
    deployment = sampler_deployment(OWNER, spec, "base", "m", 1)
    assert not any(item["name"].startswith("MLFLOW_") for item in pod_spec(deployment)["containers"][0]["env"])
    plain = [item["name"] for item in pod_spec(CASES["sample"]()[1])["containers"][0]["env"]]
    assert not any(name.startswith("MLFLOW_") for name in plain)


def test_a_spec_without_storage_has_no_storage_root():
    doc = spec_with()
    doc.pop("storage")
    with pytest.raises(ValueError, match="spec.storage is required on a cluster"):
        storage_root(ExperimentSpec.model_validate(doc), "ns", "exp")


def jobs_of(spec: ExperimentSpec) -> dict[str, dict]:
    found = {}
    for node in stage_graph(spec):
        for manifest in children(spec, node.name):
            if manifest["kind"] == "Job":
                found[node.name] = manifest
    return found


def test_every_job_ignores_disruptions_and_fails_at_once_on_a_config_error():
    for name, job in jobs_of(SPEC).items():
        container = pod_spec(job)["containers"][0]["name"]
        ignore, fail = job["spec"]["podFailurePolicy"]["rules"]
        assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        assert fail == {"action": "FailJob",
                        "onExitCodes": {"containerName": container, "operator": "In", "values": [3]}}, name
        assert pod_spec(job)["restartPolicy"] == "Never"  # what podFailurePolicy requires


def test_sharded_stages_have_a_backoff_limit_per_index_and_others_one_per_job():
    jobs = jobs_of(SPEC)
    for name in ("sample", "credit"):
        spec = jobs[name]["spec"]
        assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"], spec["completions"]) == (2, 0, 4)
        assert "backoffLimit" not in spec
    for name in ("prepare", "rft-data", "eval-sft"):
        assert jobs[name]["spec"]["backoffLimit"] == 2 and "backoffLimitPerIndex" not in jobs[name]["spec"]
    # several training pods: a lost one fails the Job (the operator restarts the group); one pod: retried
    assert jobs["sft"]["spec"]["backoffLimit"] == 0
    assert jobs_of(SINGLE_NODE)["sft"]["spec"]["backoffLimit"] == 1  # trainer.backoffLimit


def test_active_deadline_comes_from_each_stage_spec():
    spec = ExperimentSpec.model_validate(spec_with(
        stages={"sft": {"activeDeadlineSeconds": 7200}, "sampling": {"activeDeadlineSeconds": 600},
                "credit": {"activeDeadlineSeconds": 900}, "stepDpo": {"activeDeadlineSeconds": 3600},
                "eval": {"activeDeadlineSeconds": 300}},
        sweep={"sftMultipliers": [2]}, data__syntheticSize=100,
    ))
    deadlines = {name: job["spec"].get("activeDeadlineSeconds") for name, job in jobs_of(spec).items()}
    assert deadlines == {
        "prepare": None, "sft": 7200, "sft-x2": 7200, "sample": 600, "rft-data": None, "rft": None,
        "outcome-dpo": None, "credit": 900, "step-pairs": None, "step-dpo": 3600,
        "eval-sft": 300, "eval-sft-x2": 300, "eval-rft": 300, "eval-outcome-dpo": 300, "eval-step-dpo": 300,
    }


def test_jobs_of_a_queued_component_are_created_suspended_for_kueue():
    jobs = jobs_of(SPEC)  # worker queue team-a-cpu, trainer queue team-a
    assert all(job["spec"]["suspend"] is True for job in jobs.values())
    unqueued = jobs_of(ExperimentSpec.model_validate(spec_with(data__syntheticSize=100)))
    assert all("suspend" not in job["spec"] for job in unqueued.values())


def test_gpu_pods_have_a_security_context_too():
    (deployment, _) = CASES["sampler-base"]()
    train = [m for m in CASES["sft-single-node"]() if m["kind"] == "Job"][0]
    minimal = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod_spec(deployment)["containers"][0]["securityContext"] == minimal  # upstream vLLM writes its root fs
    # trainers run like the stage pods (seen working on a real kubelet): a read-only image, HOME=/tmp
    assert pod_spec(train)["containers"][0]["securityContext"] == {**minimal, "readOnlyRootFilesystem": True,
                                                                   "runAsNonRoot": True}
    for manifest in (deployment, train):
        assert pod_spec(manifest)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(train)["securityContext"]["runAsNonRoot"] is True  # the worker image's user
    assert "runAsNonRoot" not in pod_spec(deployment)["securityContext"]  # upstream vLLM runs as root


def test_every_pod_with_an_fs_group_changes_ownership_only_on_a_root_mismatch():
    pods = [pod_spec(m) for m in all_children() if pod_spec(m) is not None]
    with_group = [pod for pod in pods if "fsGroup" in pod.get("securityContext", {})]
    assert len(with_group) >= 5
    assert all(pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch" for pod in with_group)


def test_jobset_launcher_wraps_the_training_job_and_restarts_the_group():
    spec = SPEC.model_copy(update={"trainer": SPEC.trainer.model_copy(update={"launcher": "JobSet", "max_restarts": 5})})
    config_map, jobset = children(spec, "step-dpo")  # no Service of our own: JobSet makes one
    name = jobset["metadata"]["name"]
    assert (jobset["apiVersion"], jobset["kind"], name) == ("jobset.x-k8s.io/v1alpha2", "JobSet", "gsm8k-trainer-step-dpo")
    policy = jobset["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == 5
    assert policy["rules"] == [{"name": "config-error", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}]
    assert jobset["spec"]["successPolicy"] == {"operator": "All"} and jobset["spec"]["suspend"] is True  # queued
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    (replicated,) = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert (replicated["replicas"], job["completions"], job["backoffLimit"]) == (1, 2, 0)
    assert "suspend" not in job and "kueue.x-k8s.io/queue-name" not in replicated["template"]["metadata"]["labels"]
    pod = job["template"]["spec"]
    assert "subdomain" not in pod
    assert f"--rdzv-endpoint={name}-node-0-0.{name}.team-a.svc:29500" in pod["containers"][0]["command"]
