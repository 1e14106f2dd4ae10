"""The kubelet dies while a stage pod trains: the node fixture waits on the dead kubelet at once (no
zombie), a new kubelet adopts the pod's running container, and the stage finishes without a retry
(the same pod and container, restartCount 0, no failed pod in the Job, no group restart)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.e2e.test_stargraph_on_a_node import SMALL, experiment_manifest, get_experiment
from tests.fixtures.cluster import wait_for

REPO = Path(__file__).resolve().parents[2]
RELEASE, SYSTEM = "negrl", "negrl-kubelet-test"  # its own namespace: the star-graph module creates negrl-system
KUBELET_DOWN_S = 8.0  # well inside the node's grace period (40 s): the node stays Ready, nothing is evicted


@pytest.fixture(scope="module")
def api(node_cluster):
    with node_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="module")
def chart(node_cluster):
    repository, tag = node_cluster.images["operator"].rsplit(":", 1)
    node_cluster.helm("install", RELEASE, str(REPO / "charts" / "negrl"), "--namespace", SYSTEM, "--create-namespace",
                      "--wait", "--timeout", "300s", "--set", f"image.repository={repository}",
                      "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
                      "--set", "operator.reconcileInterval=2", timeout=360)
    yield
    node_cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait", check=False, timeout=120)
    node_cluster.kubectl("delete", "namespace", SYSTEM, "--wait=true", check=False, timeout=120)


def long_sft(namespace: str, name: str, images: dict[str, str]) -> dict:
    """The star-graph experiment with one SFT pod that trains for a minute or two (150 steps: long
    enough that the kubelet restart lands mid-stage, which the test asserts)."""
    doc = experiment_manifest(namespace, name, images)
    doc["spec"]["trainer"].update(nodes=1, resources=SMALL)
    doc["spec"]["stages"]["sft"]["params"]["minSteps"] = 150
    return doc


def sft_pods(api, namespace: str, name: str) -> list:
    selector = f"app.kubernetes.io/instance={name},negrl.io/stage=sft"
    return client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items


def stage(body: dict, name: str) -> dict:
    return next((s for s in (body.get("status") or {}).get("stages", []) if s["name"] == name), {})


@pytest.mark.timeout(1500)
def test_a_stage_survives_a_kubelet_restart_without_a_retry(node_cluster, api, chart, tmp_path):
    node = node_cluster.node
    namespace, name = f"kr-{uuid.uuid4().hex[:6]}", "survivor"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    node_cluster.claim(api, namespace, "negrl-data")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(long_sft(namespace, name, node_cluster.images)))
    node_cluster.kubectl("apply", "-f", str(path))
    (running,) = wait_for("the SFT pod to run", lambda: sft_pods(api, namespace, name),
                          lambda pods: len(pods) == 1 and pods[0].status.phase == "Running", timeout=600)
    container_id = running.status.container_statuses[0].container_id

    kubelet = node.kubelet()
    os.kill(kubelet.pid, signal.SIGKILL)
    died = time.monotonic()
    wait_for("the fixture to wait on the dead kubelet", lambda: list(node.exits),
             lambda exits: ("kubelet", kubelet.pid, -signal.SIGKILL) in exits, timeout=5)
    assert not Path(f"/proc/{kubelet.pid}").exists()  # reaped: no zombie left behind
    assert node.kubelet() is None
    time.sleep(max(0.0, KUBELET_DOWN_S - (time.monotonic() - died)))
    restart_s = node.restart_kubelet()
    print(f"kubelet down {time.monotonic() - died - restart_s:.1f}s, healthy again {restart_s:.1f}s after its restart")
    assert node.kubelet() is not None and node.kubelet().pid != kubelet.pid

    (adopted,) = sft_pods(api, namespace, name)
    assert adopted.status.phase == "Running", adopted.status  # the restart happened mid-stage
    done = wait_for("the SFT stage to finish", lambda: get_experiment(api, namespace, name),
                    lambda body: stage(body, "sft").get("state") in ("Succeeded", "Failed"), timeout=1200)
    sft = stage(done, "sft")
    assert sft["state"] == "Succeeded" and sft["restarts"] == 0, sft
    (finished,) = sft_pods(api, namespace, name)  # the one pod: the Job made no second one
    assert finished.metadata.uid == running.metadata.uid and finished.status.phase == "Succeeded"
    (status,) = finished.status.container_statuses
    assert (status.restart_count, status.container_id) == (0, container_id)  # the same container ran through
    job = client.BatchV1Api(api).read_namespaced_job(sft["job"], namespace)
    assert (job.status.succeeded, job.status.failed or 0) == (1, 0)

    node_cluster.kubectl("delete", "nrx", name, "-n", namespace, "--wait=true", timeout=180)
    core.delete_namespace(namespace)
