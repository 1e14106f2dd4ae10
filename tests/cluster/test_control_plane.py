"""The local control plane behaves like a real cluster for what NegRL relies on: core objects,
controllers (Deployments, Jobs, garbage collection, service accounts), the scheduler with GPU
capacity, kwok finishing Job pods, CRDs with a status subresource, and helm."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.cluster import ADVERTISE_BRIDGE, ADVERTISE_IP, FAKE_NODE_NAMES, wait_for
from tests.fixtures.node_host import route_device

CHART = Path(__file__).parent / "trivial-chart"
IMAGE = "registry.invalid/negrl/none:0"  # never pulled: kwok plays the kubelet




@pytest.fixture(scope="module")
def api(kube_cluster) -> Iterator[client.ApiClient]:
    with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="module")
def namespace(api) -> Iterator[str]:
    name = f"cp-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    created = core.create_namespace(
        {"metadata": {"name": name, "labels": {"negrl.io/test": "control-plane"}}}
    )
    assert created.metadata.name == name
    assert created.status.phase == "Active"
    yield name
    core.delete_namespace(name)


def container(name: str = "main", **resources) -> dict:
    return {"name": name, "image": IMAGE, "resources": {"requests": resources, "limits": resources}}


def test_server_reports_a_stamped_version(api, kube_cluster):
    info = client.VersionApi(api).get_code()
    assert info.major == "1"
    if kube_cluster.workdir is not None:  # the local control plane, built from tools/k8s/go.mod
        assert (info.git_version, info.minor) == ("v1.36.3", "36")


def node_names(api) -> set[str]:
    return {n.metadata.name for n in client.CoreV1Api(api).list_node().items}


def test_the_kubernetes_service_points_at_a_bridge_of_this_machine(api, kube_cluster):
    """The advertised address is on the fixture's own empty bridge: local, never the gateway."""
    endpoints = client.CoreV1Api(api).read_namespaced_endpoints("kubernetes", "default")
    addresses = [a.ip for subset in endpoints.subsets for a in subset.addresses]
    assert addresses == [ADVERTISE_IP]
    assert route_device(ADVERTISE_IP) == "lo"  # an address of this host: packets to it stay here
    assert f"inet {ADVERTISE_IP}/32" in subprocess.run(
        ["ip", "-o", "addr", "show", ADVERTISE_BRIDGE], capture_output=True, text=True, check=True).stdout


def test_fake_nodes_offer_cpu_memory_and_gpus(api, kube_cluster):
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    if kube_cluster.workdir is None:  # NEGRL_TEST_KUBECONFIG: its nodes are whatever it has
        assert any(
            {c.type: c.status for c in n.status.conditions or []}.get("Ready") == "True"
            for n in nodes.values()
        ), "the cluster tests need at least one Ready node"
        return
    assert sorted(nodes) == sorted(FAKE_NODE_NAMES)
    for node in nodes.values():
        assert node.status.allocatable == {
            "cpu": "32",
            "memory": "256Gi",
            "pods": "110",
            "ephemeral-storage": "1Ti",
            "nvidia.com/gpu": "8",
        }
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
        assert not node.spec.taints


def test_configmap_round_trip(api, namespace):
    core = client.CoreV1Api(api)
    data = {"stage.json": json.dumps({"stage": "sft", "epochs": 3}), "empty": ""}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": data})
    assert core.read_namespaced_config_map("cfg", namespace).data == data


def test_deployment_pods_run_and_are_garbage_collected(api, namespace):
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container(cpu="100m")]}},
            },
        },
    )
    dep = wait_for(
        "Deployment web to have 2 ready replicas",
        lambda: apps.read_namespaced_deployment("web", namespace),
        lambda d: d.status.ready_replicas == 2 and d.status.available_replicas == 2,
    )
    assert dep.status.replicas == 2
    (rs,) = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert [(o.kind, o.name) for o in rs.metadata.owner_references] == [("Deployment", "web")]
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert sorted(p.status.phase for p in pods) == ["Running", "Running"]
    assert {p.spec.node_name for p in pods} <= node_names(api)

    # Deleting the owner removes the ReplicaSet and its Pods (garbage collector + kwok's pod-delete).
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_for(
        "ReplicaSet and Pods of web to be garbage collected",
        lambda: (
            apps.list_namespaced_replica_set(namespace, label_selector="app=web").items,
            core.list_namespaced_pod(namespace, label_selector="app=web").items,
        ),
        lambda seen: seen == ([], []),
    )


def test_gpu_requests_schedule_up_to_node_capacity(api, namespace):
    core = client.CoreV1Api(api)
    for name, gpus in (("fits", "8"), ("too-big", "9")):
        core.create_namespaced_pod(
            namespace,
            {"metadata": {"name": name}, "spec": {"containers": [container(**{"nvidia.com/gpu": gpus})]}},
        )
    fits = wait_for(
        "pod fits to run",
        lambda: core.read_namespaced_pod("fits", namespace),
        lambda p: p.status.phase == "Running",
    )
    assert fits.spec.node_name in node_names(api)
    too_big = wait_for(
        "pod too-big to be reported unschedulable",
        lambda: core.read_namespaced_pod("too-big", namespace),
        lambda p: any(
            c.type == "PodScheduled" and c.reason == "Unschedulable" for c in p.status.conditions or []
        ),
    )
    assert too_big.status.phase == "Pending"
    assert too_big.spec.node_name is None
    assert "Insufficient nvidia.com/gpu" in next(
        c.message for c in too_big.status.conditions if c.type == "PodScheduled"
    )


def _job(name: str, annotations: dict[str, str] | None = None, completions: int = 1) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", "containers": [container(cpu="100m")]},
            },
        },
    }


def _job_condition(job: client.V1Job, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in job.status.conditions or [])


def test_job_pods_succeed_through_kwok(api, namespace):
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(namespace, _job("train", completions=2))
    job = wait_for(
        "Job train to complete",
        lambda: batch.read_namespaced_job("train", namespace),
        lambda j: _job_condition(j, "Complete"),
    )
    assert (job.status.succeeded, job.status.failed or 0, job.status.active or 0) == (2, 0, 0)
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=train").items
    assert sorted(p.status.phase for p in pods) == ["Succeeded", "Succeeded"]
    for pod in pods:
        (status,) = pod.status.container_statuses
        assert (status.state.terminated.exit_code, status.state.terminated.reason) == (0, "Completed")


def test_job_pod_exit_code_and_termination_message_from_annotations(api, namespace):
    """tools/k8s/kwok-stages.yaml lets a test say how a Job pod ends, as a kubelet would report."""
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    summary = json.dumps({"accuracy": 0.5, "samples": 12})
    batch.create_namespaced_job(namespace, _job("ok", {"kwok.negrl.io/termination-message": summary}))
    batch.create_namespaced_job(namespace, _job("bad", {"kwok.negrl.io/exit-code": "3"}))
    wait_for(
        "Job ok to complete",
        lambda: batch.read_namespaced_job("ok", namespace),
        lambda j: _job_condition(j, "Complete"),
    )
    bad = wait_for(
        "Job bad to fail",
        lambda: batch.read_namespaced_job("bad", namespace),
        lambda j: _job_condition(j, "Failed"),
    )
    assert (bad.status.failed, bad.status.succeeded or 0) == (1, 0)

    (ok_pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=ok").items
    assert ok_pod.status.phase == "Succeeded"
    assert ok_pod.status.container_statuses[0].state.terminated.message == summary
    (bad_pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert bad_pod.status.phase == "Failed"
    terminated = bad_pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (3, "Error", None)


def test_a_job_pod_deleted_while_running_is_stopped_as_a_kubelet_would(api, namespace):
    """Deleted mid-run, a pod's containers get SIGTERM (exit 143) and it ends Failed, so the Job
    controller sees the exit code (here a FailJob rule on 143) and lets the pod go."""
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    job = _job("stopped", {"kwok.negrl.io/hold": "true"})
    job["spec"]["podFailurePolicy"] = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [143]}}]}
    batch.create_namespaced_job(namespace, job)
    (pod,) = wait_for("the held pod running", lambda: core.list_namespaced_pod(namespace, label_selector="job-name=stopped").items,
                      lambda pods: len(pods) == 1 and pods[0].status.phase == "Running")
    core.delete_namespaced_pod(pod.metadata.name, namespace)
    failed = wait_for("Job stopped to fail", lambda: batch.read_namespaced_job("stopped", namespace),
                      lambda j: _job_condition(j, "Failed"))
    assert next(c.reason for c in failed.status.conditions if c.type == "Failed") == "PodFailurePolicy"
    wait_for("the stopped pod to go", lambda: core.list_namespaced_pod(namespace, label_selector="job-name=stopped").items,
             lambda pods: not pods)


def test_service_account_token_request_and_review(api, namespace):
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "runner"}})
    request = {
        "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 600}
    }
    token = core.create_namespaced_service_account_token("runner", namespace, request).status.token
    assert token.count(".") == 2  # a signed JWT

    review = client.AuthenticationV1Api(api).create_token_review({"spec": {"token": token}})
    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{namespace}:runner"
    # RBAC is on: a fresh service account may not list pods.
    access = client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "spec": {
                "user": review.status.user.username,
                "groups": review.status.user.groups,
                "resourceAttributes": {"namespace": namespace, "verb": "list", "resource": "pods"},
            }
        }
    )
    assert access.status.allowed is False


CRD_GROUP, CRD_PLURAL = "cptest.negrl.io", "widgets"


def _widget_crd() -> dict:
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        },
    }
    return {
        "metadata": {"name": f"{CRD_PLURAL}.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": CRD_PLURAL, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
            ],
        },
    }


@pytest.fixture
def widget_crd(api) -> Iterator[str]:
    ext = client.ApiextensionsV1Api(api)
    name = f"{CRD_PLURAL}.{CRD_GROUP}"
    ext.create_custom_resource_definition(_widget_crd())
    wait_for(
        f"CRD {name} to be established",
        lambda: ext.read_custom_resource_definition(name),
        lambda crd: any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []),
    )
    yield name
    ext.delete_custom_resource_definition(name)


def test_custom_resource_status_subresource(api, namespace, widget_crd):
    custom = client.CustomObjectsApi(api)
    args = (CRD_GROUP, "v1", namespace, CRD_PLURAL)
    body = {"apiVersion": f"{CRD_GROUP}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}
    # Discovery of a just-established CRD can lag by a moment.
    created = wait_for(
        "the Widget to be created", lambda: _try_create(custom, args, body), lambda o: o is not None
    )
    assert created["metadata"]["generation"] == 1
    assert "status" not in created

    # Through the status subresource only status changes; the spec part of the patch is ignored.
    custom.patch_namespaced_custom_object_status(
        *args, "w", {"status": {"phase": "Ready"}, "spec": {"size": 99}}
    )
    stored = custom.get_namespaced_custom_object(*args, "w")
    assert (stored["spec"], stored["status"], stored["metadata"]["generation"]) == (
        {"size": 3},
        {"phase": "Ready"},
        1,
    )

    # And the main resource ignores status: a spec update bumps the generation, status stays.
    custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 5}, "status": {"phase": "Lost"}})
    stored = custom.get_namespaced_custom_object(*args, "w")
    assert (stored["spec"], stored["status"], stored["metadata"]["generation"]) == (
        {"size": 5},
        {"phase": "Ready"},
        2,
    )

    with pytest.raises(ApiException) as invalid:
        custom.patch_namespaced_custom_object(*args, "w", {"spec": {"size": 0}})
    assert invalid.value.status == 422


def _try_create(custom: client.CustomObjectsApi, args: tuple, body: dict):
    try:
        return custom.create_namespaced_custom_object(*args, body)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_helm_lint_template_install(kube_cluster, api, namespace):
    kube_cluster.helm("lint", str(CHART), "--strict")
    rendered = kube_cluster.helm(
        "template", "demo", str(CHART), "--namespace", namespace, "--set", "greeting=hi"
    ).stdout
    assert "name: demo-trivial" in rendered
    assert 'greeting: "hi"' in rendered

    kube_cluster.helm(
        "install",
        "demo",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "60s",
    )
    core = client.CoreV1Api(api)
    cm = core.read_namespaced_config_map("demo-trivial", namespace)
    assert cm.data == {"greeting": "hi", "chart": "trivial-0.1.0"}
    assert cm.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    listed = json.loads(kube_cluster.helm("list", "--namespace", namespace, "--output", "json").stdout)
    assert [(r["name"], r["status"], r["chart"]) for r in listed] == [("demo", "deployed", "trivial-0.1.0")]

    kube_cluster.helm("uninstall", "demo", "--namespace", namespace, "--wait")
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("demo-trivial", namespace)
    assert gone.value.status == 404


def test_kubectl_sees_the_same_cluster(kube_cluster, namespace):
    out = kube_cluster.kubectl(
        "get", "namespace", namespace, "-o", "jsonpath={.metadata.labels.negrl\\.io/test}"
    )
    assert out.stdout == "control-plane"
