"""spec.teacher on a real API server (#22, step 2), with the operator running on the chart's RBAC:

- a served teacher is its own vLLM Deployment (`<experiment>-teacher`: tensor parallel 8 on 8 GPUs,
  its resources, its node pool's nodeSelector and toleration, its Kueue queue label), scheduled by
  the real scheduler onto the labelled node; the synthesize stage, an Indexed Job of two worker
  pods, calls it through its Service; once the stage is done the teacher is deleted while SFT
  runs, and the stage's merged figures are in the status and on /metrics;
- an endpoint teacher's API key stays in its Secret: the synthesize pods get it as a secretKeyRef
  env var, and neither a ConfigMap, the experiment nor its Events hold it.

kwok plays the kubelet (pods become Ready and complete); `ShardKubelet` writes each synthesize pod's
termination message (its shard's summary) as the stage command would; SFT's pod holds (kwok
annotation) so what happens while it runs can be seen.
"""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client

from tests.cluster.test_operator import (
    Kubelet,
    children,
    event_reasons,
    example,
    experiment,
    kubectl_apply,
    summary_for,
)
from tests.fixtures.cluster import wait_for
from tests.unit.test_teacher_cluster import MERGED, SHARDS

TEACHER_NODE, LABEL = "kwok-node-1", ("negrl.io/pool", "teacher")
HOLD = {"kwok.negrl.io/hold": "true"}
SMALL = {"requests": {"cpu": 4, "memory": "16Gi"}}  # the kwok nodes have 32 CPUs and 256Gi each
SECRET_VALUE = "sk-test-7f3a9c1e-never-shown"
ONLY_UP_TO_SFT = {  # prepare -> synthesize -> sft (held): what this test is about, and quick
    "sft": {"params": {"learningRate": 1.0e-5, "epochs": 1}},
    **{stage: {"enabled": False} for stage in ("sampling", "rft", "credit", "stepDpo", "outcomeDpo", "eval")},
}


class ShardKubelet(Kubelet):
    """Writes each finished Job pod's termination message: a synthesize pod its own shard's summary."""

    def report_finished(self) -> None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector="batch.kubernetes.io/job-name").items
        for pod in pods:
            statuses = pod.status.container_statuses or []
            terminated = [s.state.terminated for s in statuses if s.state and s.state.terminated]
            stage = (pod.metadata.labels or {}).get("negrl.io/stage")
            if pod.status.phase != "Succeeded" or not terminated or terminated[0].message or not stage:
                continue
            index = int(pod.metadata.annotations["batch.kubernetes.io/job-completion-index"])
            summary = SHARDS[index] if stage == "synthesize" else summary_for(stage)
            patched = [client.ApiClient().sanitize_for_serialization(s) for s in statuses]
            for status in patched:
                status["state"]["terminated"]["message"] = json.dumps(summary, separators=(",", ":"))
            self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace,
                                                  {"status": {"containerStatuses": patched}})


def teacher_experiment(namespace: str, name: str, example_path: str, **scheduling) -> dict:
    doc = example(namespace, name, example_path)
    spec = doc["spec"]
    spec["stages"] = ONLY_UP_TO_SFT
    spec["worker"]["shards"] = 2
    spec["trainer"]["resources"] = SMALL
    spec["scheduling"] = {"trainer": {"podAnnotations": HOLD}, **scheduling}
    return doc


def stage(body: dict, name: str) -> dict:
    return next((s for s in (body.get("status") or {}).get("stages", []) if s["name"] == name), {})


@pytest.fixture
def teacher_pool(kube_cluster):
    """One kwok node labelled as the teacher's node pool."""
    kube_cluster.kubectl("label", "node", TEACHER_NODE, "=".join(LABEL), "--overwrite")
    yield dict([LABEL])
    kube_cluster.kubectl("label", "node", TEACHER_NODE, f"{LABEL[0]}-")


def test_a_served_teacher_runs_on_its_pool_and_goes_once_synthesize_is_done(
        kube_cluster, api, operator, namespace, teacher_pool, tmp_path):
    name = "served"
    placement = {"nodeSelector": teacher_pool, "queueName": "team-a-teacher",
                 "tolerations": [{"key": "negrl.io/teacher", "operator": "Exists", "effect": "NoSchedule"}]}
    doc = teacher_experiment(namespace, name, "examples/teacher-gpu.yaml", teacher=placement)
    doc["spec"]["teacher"]["served"]["resources"] = SMALL
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    with ShardKubelet(api, namespace):
        kubectl_apply(kube_cluster, doc, tmp_path)
        deployment = wait_for("the teacher Deployment", lambda: apps.list_namespaced_deployment(namespace).items,
                              lambda found: found, timeout=60)[0]
        assert deployment.metadata.name == f"{name}-teacher" and deployment.spec.replicas == 1
        assert deployment.metadata.labels["app.kubernetes.io/component"] == "teacher"
        assert deployment.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a-teacher"
        pod_spec = deployment.spec.template.spec
        assert deployment.spec.template.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a-teacher"
        container = pod_spec.containers[0]
        args = container.args
        assert args[args.index("--tensor-parallel-size") + 1] == "8"
        assert args[args.index("--model") + 1] == "/data/models/Qwen2.5-72B-Instruct"
        assert container.resources.limits == {"nvidia.com/gpu": "8"}
        assert container.resources.requests == {"cpu": "4", "memory": "16Gi"}
        assert pod_spec.node_selector == teacher_pool
        assert [(t.key, t.operator, t.effect) for t in pod_spec.tolerations] == [
            ("negrl.io/teacher", "Exists", "NoSchedule")]
        selector = "app.kubernetes.io/component=teacher"
        pods = wait_for("the teacher pod to be scheduled", lambda: core.list_namespaced_pod(
            namespace, label_selector=selector).items, lambda found: found and found[0].spec.node_name, timeout=60)
        assert pods[0].spec.node_name == TEACHER_NODE  # the real scheduler honoured the pool's label

        job = wait_for("the synthesize Job", lambda: children(api, namespace, name)["jobs"],
                       lambda jobs: any(j.metadata.labels["negrl.io/stage"] == "synthesize" for j in jobs), timeout=60)
        synthesize = next(j for j in job if j.metadata.labels["negrl.io/stage"] == "synthesize")
        assert (synthesize.spec.completion_mode, synthesize.spec.completions) == ("Indexed", 2)
        config = json.loads(core.read_namespaced_config_map(f"{name}-config-synthesize", namespace).data["stage.json"])
        assert config["server"]["baseUrl"] == f"http://{name}-teacher.{namespace}.svc:8000/v1"
        assert config["server"]["maxConcurrency"] == 128

        body = wait_for("SFT running", lambda: experiment(api, namespace, name),
                        lambda found: stage(found, "sft").get("state") == "Running", timeout=90)
        assert stage(body, "synthesize")["state"] == "Succeeded"
        gone = wait_for("the teacher to go", lambda: children(api, namespace, name),
                        lambda found: not found["deployments"] and not [
                            s for s in found["services"] if s.metadata.name == f"{name}-teacher"], timeout=60)
        assert gone["jobs"]  # while SFT still runs: the teacher went with its stage, not with the experiment
        assert stage(experiment(api, namespace, name), "sft")["state"] == "Running"

    status = experiment(api, namespace, name)["status"]
    assert status["results"]["synthesis"] == MERGED.model_dump(by_alias=True)
    assert stage({"status": status}, "synthesize")["summary"]["acceptanceRate"] == 0.45
    labels = f'experiment="{name}",namespace="{namespace}"'
    metrics = wait_for("the synthesis gauges", lambda: operator.get("/metrics"),
                       lambda text: f"negrl_operator_synthesis_acceptance_ratio{{{labels}}} 0.45" in text)
    assert f"negrl_operator_synthesis_requests{{{labels}}} 11.0" in metrics
    assert f'negrl_operator_synthesis_dropped{{{labels},reason="duplicates"}} 9.0' in metrics
    assert {"StageStarted", "StageSucceeded", "StageWaiting"} <= set(event_reasons(kube_cluster, namespace, name))


def test_an_endpoint_teachers_key_stays_in_its_secret(kube_cluster, api, operator, namespace, tmp_path):
    name = "endpoint"
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "teacher-api"}, "type": "Opaque", "data": {
        "api-key": base64.b64encode(SECRET_VALUE.encode()).decode()}})
    doc = teacher_experiment(namespace, name, "examples/teacher-endpoint.yaml")
    with ShardKubelet(api, namespace):
        kubectl_apply(kube_cluster, doc, tmp_path)
        wait_for("SFT running", lambda: experiment(api, namespace, name),
                 lambda found: stage(found, "sft").get("state") == "Running", timeout=90)
    found = children(api, namespace, name)
    assert not found["deployments"]  # nothing to serve: the teacher is someone else's
    job = next(j for j in found["jobs"] if j.metadata.labels["negrl.io/stage"] == "synthesize")
    reference = {"name": "TEACHER_API_KEY", "valueFrom": {"secretKeyRef": {"name": "teacher-api", "key": "api-key"}}}
    env = client.ApiClient().sanitize_for_serialization(job.spec.template.spec.containers[0].env)
    assert reference in env
    pods = [p for p in found["pods"] if p.metadata.labels.get("negrl.io/stage") == "synthesize"]
    assert len(pods) == 2 and all(
        reference in client.ApiClient().sanitize_for_serialization(p.spec.containers[0].env) for p in pods)
    others = [j for j in found["jobs"] if j.metadata.labels["negrl.io/stage"] != "synthesize"]
    assert others and all("TEACHER_API_KEY" not in json.dumps(client.ApiClient().sanitize_for_serialization(j))
                          for j in others)
    config = {c.metadata.name: c.data["stage.json"] for c in found["configmaps"]}[f"{name}-config-synthesize"]
    assert json.loads(config)["endpoint"]["apiKeyEnv"] == "TEACHER_API_KEY"
    assert "teacher-api" not in config and SECRET_VALUE not in config
    body = experiment(api, namespace, name)
    assert body["status"]["results"]["synthesis"] == MERGED.model_dump(by_alias=True)
    assert SECRET_VALUE not in json.dumps(body["status"])
    events = kube_cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert SECRET_VALUE not in events and all(SECRET_VALUE not in c for c in
                                              (c.data.get("stage.json", "") for c in found["configmaps"]))
