"""What a cluster test's failed wait prints (tests/fixtures/cluster.py: wait_for, shown)."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.fixtures.cluster import shown, wait_for


def pending_pod() -> client.V1Pod:
    unschedulable = client.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                          message="0/3 nodes are available: 1 Insufficient nvidia.com/gpu.")
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="t-0", managed_fields=[client.V1ManagedFieldsEntry(manager="x" * 5000)]),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i" * 5000)]),
        status=client.V1PodStatus(phase="Pending", conditions=[unschedulable]))


def test_a_pod_is_shown_by_name_node_and_status():
    assert shown([pending_pod()]) == [{"kind": "V1Pod", "name": "t-0", "nodeName": None, "status": {
        "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": "0/3 nodes are available: 1 Insufficient nvidia.com/gpu."}]}}]
    assert shown({"a": 1, "b": [2]}) == {"a": 1, "b": [2]}


def test_a_timed_out_wait_names_the_scheduler_reason_despite_a_long_spec():
    with pytest.raises(AssertionError, match=r"waiting for the pod; last seen:\n.*Insufficient nvidia.com/gpu"):
        wait_for("the pod", lambda: [pending_pod()], lambda pods: pods[0].spec.node_name, timeout=0)


def test_a_custom_resource_is_shown_by_kind_name_and_status():
    body = {"apiVersion": "negrl.io/v1alpha1", "kind": "NegRLExperiment",
            "metadata": {"name": "refused", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x" * 5000}},
            "spec": {"seeds": [0]}, "status": {"phase": "Running", "conditions": [{"type": "Stalled", "status": "False"}]}}
    assert shown(body) == {"kind": "NegRLExperiment", "name": "refused",
                           "status": {"phase": "Running", "conditions": [{"type": "Stalled", "status": "False"}]}}
