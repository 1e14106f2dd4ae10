"""The experiment's claim on the local control plane: a ReadWriteOnce claim (bound by the real
controller-manager to a ReadWriteOnce volume) gives StorageShared False, reason StorageNotShared, a
message naming the claim, why several pods mount it and the field to change, and a Warning Event,
while the stages run on; a missing claim gives ClaimNotFound; the namespace's ReadWriteMany claim
gives StorageShared True and no such Event. The operator runs under the chart's RBAC."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.cluster.test_operator import example, experiment, kubectl_apply
from tests.cluster.test_stuck import condition
from tests.fixtures.cluster import wait_for

FIX = "use a ReadWriteMany claim (NFS, CephFS, a CSI file store) in spec.storage.claimName"


def warnings(kube_cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    out = kube_cluster.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                               f"involvedObject.kind=NegRLExperiment,involvedObject.name={name},type=Warning").stdout
    return [(event["reason"], event["message"]) for event in json.loads(out)["items"]]


@pytest.fixture
def rwo_claim(api, namespace):
    """`rwo-data`: a claim bound to a ReadWriteOnce hostPath volume (kwok never mounts it)."""
    core, volume = client.CoreV1Api(api), f"{namespace}-rwo"
    core.create_persistent_volume({"metadata": {"name": volume}, "spec": {
        "capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
        "hostPath": {"path": f"/tmp/{volume}"}, "claimRef": {"namespace": namespace, "name": "rwo-data"}}})
    core.create_namespaced_persistent_volume_claim(namespace, {"metadata": {"name": "rwo-data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume,
        "resources": {"requests": {"storage": "1Ti"}}}})
    wait_for("rwo-data Bound", lambda: core.read_namespaced_persistent_volume_claim("rwo-data", namespace).status.phase,
             lambda phase: phase == "Bound", timeout=60)
    yield "rwo-data"
    core.delete_persistent_volume(volume)


def applied(kube_cluster, namespace: str, tmp_path, name: str, claim: str) -> None:
    doc = example(namespace, name)
    doc["spec"]["storage"]["claimName"] = claim
    kubectl_apply(kube_cluster, doc, tmp_path)


def storage_condition(api, namespace: str, name: str, reason: str) -> dict:
    body = wait_for(f"{name}: StorageShared {reason}", lambda: experiment(api, namespace, name),
                    lambda b: condition(b, "StorageShared").get("reason") == reason, timeout=120)
    return body


def test_a_claim_the_pods_cannot_share_is_reported_and_a_shared_one_is_not(kube_cluster, api, operator, namespace,
                                                                           tmp_path, rwo_claim):
    applied(kube_cluster, namespace, tmp_path, "rwo", rwo_claim)
    applied(kube_cluster, namespace, tmp_path, "lost", "no-such-claim")
    applied(kube_cluster, namespace, tmp_path, "rwx", "negrl-data")  # the namespace's ReadWriteMany claim

    body = storage_condition(api, namespace, "rwo", "StorageNotShared")
    storage = condition(body, "StorageShared")
    assert storage["status"] == "False" and storage["observedGeneration"] == body["metadata"]["generation"]
    assert storage["message"] == (
        f"PersistentVolumeClaim {namespace}/rwo-data is ReadWriteOnce, but the sampler pods and the stage Jobs that "
        "call them; the 4 shards of each sample and credit Job mount it at the same time: it works only while every "
        f"pod runs on one node (elsewhere pods fail with Multi-Attach errors); {FIX}")
    assert body["status"]["phase"] == "Running" and condition(body, "Stalled")["status"] == "False"
    wait_for("a StorageNotShared Warning", lambda: warnings(kube_cluster, namespace, "rwo"),
             lambda found: ("StorageNotShared", storage["message"]) in found, timeout=60)

    lost = condition(storage_condition(api, namespace, "lost", "ClaimNotFound"), "StorageShared")
    assert lost["status"] == "False" and lost["message"] == (
        f"PersistentVolumeClaim {namespace}/no-such-claim not found: the experiment's pods wait (Pending) until it "
        f"exists; create it or {FIX}")
    wait_for("a ClaimNotFound Warning", lambda: warnings(kube_cluster, namespace, "lost"),
             lambda found: ("ClaimNotFound", lost["message"]) in found, timeout=60)

    shared = condition(storage_condition(api, namespace, "rwx", "ReadWriteMany"), "StorageShared")
    assert (shared["status"], shared["message"]) == (
        "True", f"PersistentVolumeClaim {namespace}/negrl-data is ReadWriteMany: every pod can mount it")
    reasons = [reason for reason, _ in warnings(kube_cluster, namespace, "rwx")]
    assert not {"StorageNotShared", "ClaimNotFound", "StorageReadOnly"} & set(reasons), reasons
