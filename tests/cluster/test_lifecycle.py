"""The operator's lifecycle on the local control plane: artifacts of a re-created experiment, least
privilege in cluster-wide mode, two replicas with leader election, no finalizer left behind.

The uninstall test runs last: it removes the chart this module installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

from kubernetes import client

from tests.cluster.test_operator import (
    GROUP,
    PLURAL,
    RELEASE,
    SYSTEM,
    VERSION,
    Kubelet,
    OperatorProcess,
    children,
    example,
    experiment,
    kubectl_apply,
    phase,
)
from tests.fixtures.cluster import wait_for

LEGACY_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def configs(api, namespace: str, name: str) -> dict[str, dict]:
    """Every stage's config (the JSON its Job reads), by stage."""
    return {cm.metadata.labels["negrl.io/stage"]: json.loads(cm.data["stage.json"])
            for cm in children(api, namespace, name)["configmaps"] if "negrl.io/stage" in cm.metadata.labels}


def test_a_recreated_experiment_reruns_every_stage_in_its_own_folder(kube_cluster, api, operator_kubeconfig,
                                                                     namespace, tmp_path, tmp_path_factory):
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("op") / "operator.log")
    process.start()
    try:
        with Kubelet(api, namespace):
            doc = example(namespace, "again")
            doc["spec"]["storage"]["onDelete"] = "Delete"
            kubectl_apply(kube_cluster, doc, tmp_path)
            first = wait_for("Succeeded", lambda: experiment(api, namespace, "again"),
                             lambda body: phase(body) == "Succeeded", timeout=150)
            old_uid, old_configs = first["metadata"]["uid"], configs(api, namespace, "again")
            kube_cluster.kubectl("delete", "nrx", "again", "-n", namespace, "--wait=true")
            batch = client.BatchV1Api(api)
            cleanup = wait_for("the clean-up Job", lambda: batch.list_namespaced_job(
                namespace, label_selector="app.kubernetes.io/component=cleanup").items, lambda jobs: jobs, timeout=30)
            changed = example(namespace, "again")
            changed["spec"]["stages"]["sft"]["params"]["learningRate"] = 2e-5
            kubectl_apply(kube_cluster, changed, tmp_path)
            second = wait_for("Succeeded again", lambda: experiment(api, namespace, "again"),
                              lambda body: phase(body) == "Succeeded" and body["metadata"]["uid"] != old_uid,
                              timeout=150)
    finally:
        process.stop()
    (job,) = cleanup
    command = job.spec.template.spec.containers[0].command
    assert command == ["rm", "-rf", "--", f"/data/experiments/{namespace}/again/{old_uid}"]  # the old run's only
    new_uid, new_configs = second["metadata"]["uid"], configs(api, namespace, "again")
    assert set(new_configs) == set(old_configs) and len(new_configs) == 13
    root = f"/data/experiments/{namespace}/again/{new_uid}"
    for stage_name, config in new_configs.items():  # every stage wrote and read only the new run's folder
        assert config["outputDir"] == f"{root}/{stage_name}", stage_name
        assert old_uid not in json.dumps(config), stage_name
    assert all(s["artifact"].startswith(root + "/") for s in second["status"]["stages"])
    assert all(s["state"] == "Succeeded" and s["startTime"] >= second["metadata"]["creationTimestamp"]
               for s in second["status"]["stages"])


def test_the_service_account_cannot_write_objects_it_does_not_manage(kube_cluster, chart, operator_kubeconfig,
                                                                     namespace):
    env = {**kube_cluster.env, "KUBECONFIG": str(operator_kubeconfig)}

    def as_operator(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)

    assert as_operator("auth", "can-i", "patch", "configmaps", "-n", "kube-system").stdout.strip() == "yes"  # RBAC
    patch = as_operator("patch", "configmap", "kube-root-ca.crt", "-n", "kube-system", "--type", "merge", "-p",
                        '{"data":{"injected":"x"}}')
    assert patch.returncode != 0 and "may only" in patch.stderr and "kube-system/kube-root-ca.crt" in patch.stderr
    created = as_operator("create", "configmap", "planted", "-n", namespace)
    assert created.returncode != 0 and "managed-by=negrl-operator" in created.stderr
    labelled = subprocess.run(  # what the operator writes: allowed
        ["kubectl", "create", "-f", "-", "-o", "name"], env=env, capture_output=True, text=True,
                              input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                                  "name": "ours", "namespace": namespace,
                                  "labels": {"app.kubernetes.io/managed-by": "negrl-operator"}}}))
    assert labelled.returncode == 0, labelled.stderr
    core = client.CoreV1Api(kube_cluster.api_client())
    assert "injected" not in (core.read_namespaced_config_map("kube-root-ca.crt", "kube-system").data or {})


def lease_holder(api) -> str | None:
    try:
        return client.CoordinationV1Api(api).read_namespaced_lease(RELEASE, SYSTEM).spec.holder_identity
    except client.ApiException:
        return None


def reconciles(process: OperatorProcess) -> float:
    text = process.get("/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("negrl_operator_reconciles_total{"))


def test_two_replicas_one_leads_and_the_other_takes_over_when_it_dies(kube_cluster, api, operator_kubeconfig,
                                                                      namespace, tmp_path, tmp_path_factory):
    logs = tmp_path_factory.mktemp("ha")
    election = {"NEGRL_LEADER_ELECT": "true", "NEGRL_LEASE_NAME": RELEASE, "NEGRL_LEASE_NAMESPACE": SYSTEM,
                "NEGRL_LEASE_DURATION": "4"}
    leader = OperatorProcess(operator_kubeconfig, logs / "a.log", env={**election, "POD_NAME": "replica-a"})
    standby = OperatorProcess(operator_kubeconfig, logs / "b.log", env={**election, "POD_NAME": "replica-b"})
    leader.start()
    wait_for("replica-a to lead", lambda: lease_holder(api), lambda holder: (holder or "").startswith("replica-a"))
    standby.start()  # serves /healthz while it waits for the Lease
    try:
        with Kubelet(api, namespace):
            kubectl_apply(kube_cluster, example(namespace, "ha"), tmp_path)
            wait_for("the sample stage", lambda: experiment(api, namespace, "ha"), lambda body: any(
                s["name"] == "sample" and s["state"] != "Pending" for s in (body.get("status") or {}).get("stages", [])),
                timeout=90)
            assert reconciles(leader) > 0 and reconciles(standby) == 0  # one active replica
            jobs_before = {job.metadata.name: job.metadata.uid for job in children(api, namespace, "ha")["jobs"]}
            os.kill(leader.proc.pid, signal.SIGKILL)  # mid-experiment, without a chance to let go of the Lease
            wait_for("replica-b to lead", lambda: lease_holder(api),
                     lambda holder: (holder or "").startswith("replica-b"), timeout=30)
            done = wait_for("Succeeded", lambda: experiment(api, namespace, "ha"),
                            lambda body: phase(body) in ("Succeeded", "Failed"), timeout=150)
    finally:
        leader.stop()
        standby.stop()
    assert phase(done) == "Succeeded", standby.tail()
    assert "leads (Lease" in (logs / "b.log").read_text()
    jobs = children(api, namespace, "ha")["jobs"]
    assert all(jobs_before[j.metadata.name] == j.metadata.uid for j in jobs if j.metadata.name in jobs_before)
    assert len(jobs) == 13  # no stage ran twice


def test_after_helm_uninstall_experiments_and_their_namespace_delete_cleanly(kube_cluster, api, operator_kubeconfig,
                                                                            namespace, tmp_path, tmp_path_factory):
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("op") / "operator.log")
    process.start()
    custom = client.CustomObjectsApi(api)
    try:
        doc = example(namespace, "left")
        doc["metadata"]["finalizers"] = [LEGACY_FINALIZER]  # as a version with a kopf timer left it
        kubectl_apply(kube_cluster, doc, tmp_path)
        body = wait_for("Running, legacy finalizer released", lambda: experiment(api, namespace, "left"),
                        lambda b: phase(b) == "Running" and not b["metadata"].get("finalizers"))
        assert "kopf.zalando.org/last-handled-configuration" not in (body["metadata"].get("annotations") or {})
        kubectl_apply(kube_cluster, example(namespace, "orphan"), tmp_path)
        wait_for("the second one Running", lambda: experiment(api, namespace, "orphan"), lambda b: phase(b) == "Running")
    finally:
        process.stop()
    kube_cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait", timeout=120)
    kube_cluster.kubectl("delete", "nrx", "left", "-n", namespace, "--wait=true", "--timeout=30s")  # no finalizer
    kube_cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=90s", timeout=120)
    gone = wait_for("the namespace gone", lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                                       PLURAL)["items"],
                    lambda items: not items, timeout=30)
    assert gone == []
