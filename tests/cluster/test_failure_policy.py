"""Failure handling on the real API server and Job controller: a config error (exit 3) fails the
Job at once through its podFailurePolicy (no retry), `spec.retry` reruns the failed stage without
recreating the experiment, and a failed branch does not stop the others under failurePolicy
Continue. kwok plays the kubelet: a pod annotation sets the exit code (tools/k8s/kwok-stages.yaml)."""

from __future__ import annotations

import json

from kubernetes import client

from tests.cluster.test_operator import (
    Kubelet,
    children,
    event_reasons,
    example,
    experiment,
    kubectl_apply,
    phase,
)
from tests.fixtures.cluster import wait_for

HOLD = "kwok.negrl.io/hold"


def job_condition(job, kind: str):
    return next((c for c in (job.status.conditions or []) if c.type == kind and c.status == "True"), None)


def test_config_error_fails_at_once_and_retry_reruns_the_stage(kube_cluster, api, operator, namespace, tmp_path):
    name = "bad-config"
    error = {"stage": "prepare", "error": "ValidationError: stage config: trainSize must be >= 1"}
    doc = example(namespace, name)
    doc["spec"]["worker"]["backoffLimit"] = 3
    doc["spec"]["scheduling"] = {"worker": {"podAnnotations": {  # kwok: the pod exits 3 (CONFIG_ERROR)
        "kwok.negrl.io/exit-code": "3", "kwok.negrl.io/termination-message": json.dumps(error)}}}
    kubectl_apply(kube_cluster, doc, tmp_path)
    done = wait_for("Failed", lambda: experiment(api, namespace, name), lambda body: phase(body) == "Failed")
    assert done["status"]["message"] == f"stage prepare failed: {error['error']}"
    (job,) = children(api, namespace, name)["jobs"]
    failed = job_condition(job, "Failed")
    assert failed is not None and failed.reason == "PodFailurePolicy"  # not BackoffLimitExceeded
    assert job.status.failed == 1  # backoffLimit 3, but no retry of a config error
    uid = done["metadata"]["uid"]

    # Fix the cause, then ask for a retry: the same experiment runs the stage again and finishes.
    with Kubelet(api, namespace):
        patch = {"spec": {"scheduling": {"worker": {"podAnnotations": None}}, "retry": 1}}
        kube_cluster.kubectl("patch", "nrx", name, "-n", namespace, "--type", "merge", "-p", json.dumps(patch))
        done = wait_for("Succeeded", lambda: experiment(api, namespace, name),
                        lambda body: phase(body) in ("Succeeded", "Failed") and body["status"].get("retry") == 1,
                        timeout=150)
    assert phase(done) == "Succeeded" and done["metadata"]["uid"] == uid
    prepare = next(s for s in done["status"]["stages"] if s["name"] == "prepare")
    assert prepare["state"] == "Succeeded" and prepare["summary"]["train"] == 4000
    assert {"Failed", "Retrying", "Succeeded"} <= set(event_reasons(kube_cluster, namespace, name))


def test_disrupted_pod_is_replaced_without_spending_the_backoff_limit(kube_cluster, api, operator, namespace,
                                                                     tmp_path):
    """A running pod evicted with a DisruptionTarget condition (a drain, a preemption) is replaced,
    and the Job does not fail although its backoffLimit is 0."""
    name = "drained"
    doc = example(namespace, name)
    doc["spec"]["worker"]["backoffLimit"] = 0
    doc["spec"]["scheduling"] = {"worker": {"podAnnotations": {HOLD: "true"}}}
    core = client.CoreV1Api(api)
    kubectl_apply(kube_cluster, doc, tmp_path)
    evict_and_check_replacement(api, core, namespace, name)


def evict_and_check_replacement(api, core, namespace: str, name: str) -> None:
    (pod,) = wait_for("the prepare pod running", lambda: children(api, namespace, name)["pods"],
                      lambda pods: len(pods) == 1 and pods[0].status.phase == "Running")
    # What the kubelet reports after an eviction: the condition, then the pod Failed (exit 137).
    killed = [{"name": c.name, "image": c.image, "ready": False, "restartCount": 0, "state": {"terminated": {
        "exitCode": 137, "reason": "Error", "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:01Z"}}} for c in pod.spec.containers]
    core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {"phase": "Failed", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
         "message": "Eviction API: evicting"}], "containerStatuses": killed}})
    core.delete_namespaced_pod(pod.metadata.name, namespace)
    pods = wait_for("a replacement pod", lambda: children(api, namespace, name)["pods"],
                    lambda found: any(p.metadata.uid != pod.metadata.uid and p.status.phase == "Running"
                                      for p in found), timeout=60)
    assert len(pods) >= 1
    (job,) = children(api, namespace, name)["jobs"]
    assert job_condition(job, "Failed") is None and not job.status.failed
    assert phase(experiment(api, namespace, name)) == "Running"


def test_fields_running_stages_ignore_cannot_change(kube_cluster, chart, namespace, tmp_path):
    doc = example(namespace, "frozen", suspend=True)
    kubectl_apply(kube_cluster, doc, tmp_path)
    patch = ["patch", "nrx", "frozen", "-n", namespace, "--type", "merge", "-p"]
    for change, message in ((({"storage": {"path": "elsewhere"}}), "storage is immutable"),
                            ({"model": {"name": "other/model"}}, "model is immutable"),
                            ({"seeds": [0, 1]}, "seeds are immutable")):
        result = kube_cluster.kubectl(*patch, json.dumps({"spec": change}), check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr
    kube_cluster.kubectl(*patch, json.dumps({"spec": {"suspend": False, "retry": 1}}))  # others still change
