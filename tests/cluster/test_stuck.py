"""Stuck states on the local control plane: each case makes the prepare stage's pod stuck or fail the
way Kubernetes would (kwok stages driven by pod annotations, see tools/k8s/kwok-stages.yaml; the
real scheduler for Unschedulable; the real Job controller and admission for FailedCreate; the real
API server's validation for a refused apply) and asserts the experiment's condition, its machine-
readable reason, the stage's message and the Event the operator posted.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster.test_operator import (
    event_reasons,
    example,
    experiment,
    kubectl_apply,
)
from tests.fixtures.cluster import wait_for

WAITING, WAITING_MESSAGE = "kwok.negrl.io/waiting-reason", "kwok.negrl.io/waiting-message"
EXIT, TERMINATED, POD_REASON = "kwok.negrl.io/exit-code", "kwok.negrl.io/terminated-reason", "kwok.negrl.io/pod-reason"


def condition(body: dict, kind: str) -> dict:
    return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def stage(body: dict, name: str) -> dict:
    return next((s for s in (body.get("status") or {}).get("stages", []) if s["name"] == name), {})


def run_case(kube_cluster, api, namespace, tmp_path, name: str, worker: dict, backoff: int = 2) -> None:
    doc = example(namespace, name)
    doc["spec"]["worker"]["backoffLimit"] = backoff
    doc["spec"]["scheduling"] = {"worker": worker}
    kubectl_apply(kube_cluster, doc, tmp_path)


@pytest.mark.parametrize(("reason", "worker", "detail"), [
    pytest.param("ImagePullBackOff", {"podAnnotations": {
        WAITING: "ImagePullBackOff", WAITING_MESSAGE: 'Back-off pulling image "ghcr.io/negrl/negrl-worker:typo"'}},
        'Back-off pulling image "ghcr.io/negrl/negrl-worker:typo"', id="image-pull"),
    pytest.param("CrashLoopBackOff", {"podAnnotations": {
        WAITING: "CrashLoopBackOff", WAITING_MESSAGE: "back-off 40s restarting failed container"}},
        "back-off 40s restarting failed container", id="crash-loop"),
    pytest.param("Unschedulable", {"nodeSelector": {"negrl.io/no-such-pool": "a100"}},
                 "didn't match Pod's node affinity/selector", id="unschedulable"),
    pytest.param("FailedCreate", {"priorityClassName": "no-such-priority"},
                 "no PriorityClass with name no-such-priority was found", id="failed-create"),
])
def test_a_stuck_stage_stalls_the_experiment_with_the_reason(kube_cluster, api, operator, namespace, tmp_path,
                                                             reason, worker, detail):
    run_case(kube_cluster, api, namespace, tmp_path, "stuck", worker)
    body = wait_for(f"Stalled {reason}", lambda: experiment(api, namespace, "stuck"),
                    lambda b: condition(b, "Stalled").get("reason") == reason, timeout=60)
    stalled, ready = condition(body, "Stalled"), condition(body, "Ready")
    assert stalled["status"] == "True" and detail in stalled["message"], stalled
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert condition(body, "Reconciling")["status"] == "False"
    prepare = stage(body, "prepare")
    assert (prepare["state"], prepare["reason"]) == ("Running", reason) and detail in prepare["message"]
    assert prepare["since"] and body["status"]["phase"] == "Running"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    wait_for(f"a {reason} Event", lambda: event_reasons(kube_cluster, namespace, "stuck"), lambda found: reason in found,
             timeout=30)
    printed = kube_cluster.kubectl("get", "nrx", "stuck", "-n", namespace, "--no-headers").stdout
    print(printed)
    assert printed.split()[:5] == ["stuck", "Running", "prepare", "False", reason]  # kubectl get says what holds it


@pytest.mark.parametrize(("reason", "annotations"), [
    pytest.param("OOMKilled", {EXIT: "137", TERMINATED: "OOMKilled"}, id="oom-killed"),
    pytest.param("Evicted", {EXIT: "1", POD_REASON: "Evicted"}, id="evicted"),
])
def test_a_pod_that_ends_badly_degrades_then_fails_with_its_reason(kube_cluster, api, operator, namespace,
                                                                  tmp_path, reason, annotations):
    run_case(kube_cluster, api, namespace, tmp_path, "ends", {"podAnnotations": annotations}, backoff=1)
    degraded = wait_for(f"Degraded {reason}", lambda: experiment(api, namespace, "ends"),
                        lambda b: condition(b, "Degraded").get("reason") == reason
                        or (b.get("status") or {}).get("phase") == "Failed", timeout=60)
    failed = wait_for("Failed", lambda: experiment(api, namespace, "ends"),
                      lambda b: (b.get("status") or {}).get("phase") == "Failed", timeout=90)
    assert condition(degraded, "Degraded")["reason"] in (reason, "StageFailed")
    stalled, ready = condition(failed, "Stalled"), condition(failed, "Ready")
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert (ready["status"], ready["reason"]) == ("False", "Failed")  # a Failed experiment is not Ready
    assert stage(failed, "prepare")["reason"] == reason
    reasons = wait_for("the Events", lambda: event_reasons(kube_cluster, namespace, "ends"),
                       lambda found: {"StageFailed", "Failed"} <= set(found), timeout=30)
    assert reason in reasons  # posted while the Job retried


def test_a_refused_child_is_reported_as_stalled_not_retried_silently(kube_cluster, api, operator, namespace,
                                                                    tmp_path):
    run_case(kube_cluster, api, namespace, tmp_path, "refused", {"podAnnotations": {"not a valid key!": "x"}})
    body = wait_for("Stalled ApplyRejected", lambda: experiment(api, namespace, "refused"),
                    lambda b: condition(b, "Stalled").get("reason") == "ApplyRejected", timeout=60)
    stalled = condition(body, "Stalled")
    assert stalled["status"] == "True" and "422" in stalled["message"] and "not a valid key!" in stalled["message"]
    assert condition(body, "Ready")["status"] == "False"
    assert "ApplyRejected" in wait_for("an ApplyRejected Event", lambda: event_reasons(kube_cluster, namespace, "refused"),
                                       lambda found: "ApplyRejected" in found, timeout=30)
    metrics = operator.get("/metrics")
    assert 'negrl_operator_reconcile_errors_total{reason="Api422"}' in metrics
    json.dumps(body)  # the status is plain JSON (no Python objects leaked into it)


def test_waiting_for_a_sampler_says_why_and_how_long(kube_cluster, api, operator, namespace, tmp_path):
    from tests.cluster.test_operator import Kubelet

    doc = example(namespace, "nosampler")
    # small requests: pods the earlier cases left terminating must not keep the trainer off the nodes
    doc["spec"]["trainer"]["resources"] = {"requests": {"cpu": 1, "memory": "1Gi"}}
    doc["spec"]["scheduling"] = {"sampler": {"podAnnotations": {
        WAITING: "ImagePullBackOff", WAITING_MESSAGE: 'Back-off pulling image "vllm/vllm-openai:typo"'}}}
    with Kubelet(api, namespace):
        kubectl_apply(kube_cluster, doc, tmp_path)
        body = wait_for("SamplerNotReady", lambda: experiment(api, namespace, "nosampler"),
                        lambda b: "ImagePullBackOff" in stage(b, "sample").get("message", ""), timeout=180)
    sample = stage(body, "sample")
    assert (sample["state"], sample["reason"]) == ("Waiting", "SamplerNotReady") and sample["since"]
    assert sample["message"].startswith("waiting for sampler nosampler-sampler-sft to be ready (")
    reconciling = condition(body, "Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "SamplerNotReady")
