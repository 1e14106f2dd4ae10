"""The operator under the real Kueue manager: two experiments share a ClusterQueue whose GPU quota
fits one trainer. The second trainer's Job stays suspended (its stage says it is queued, and why)
until the first finishes; Kueue's flavor puts the admitted pods on the flavor's node; the
experiment's spec.suspend stops and resumes a Kueue-managed Job through its Workload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.test_operator import Kubelet, children, example, experiment, kubectl_apply
from tests.fixtures.cluster import shown, wait_for

REPO = Path(__file__).resolve().parents[2]
KUEUE = ("kueue.x-k8s.io", "v1beta2")
FLAVOR_NODE, OTHER_NODE = "kwok-node-1", "kwok-node-0"
HOLD = {"kwok.negrl.io/hold": "true"}  # kwok keeps these pods running until the annotation goes
TRAINER_REQUESTS = {"requests": {"cpu": 8, "memory": "64Gi"}}  # 8 GPUs on a kwok node, a quarter of its CPUs


def create_queues(api, namespace: str) -> None:
    """Flavor `gpu-<ns>` on one kwok node; a ClusterQueue with room for one 8-GPU trainer; LocalQueue gpu."""
    custom = client.CustomObjectsApi(api)
    flavor, queue = f"gpu-{namespace}", f"gpu-{namespace}"
    custom.create_cluster_custom_object(*KUEUE, "resourceflavors", {
        "apiVersion": "/".join(KUEUE), "kind": "ResourceFlavor", "metadata": {"name": flavor},
        "spec": {"nodeLabels": {"kubernetes.io/hostname": FLAVOR_NODE}}})
    custom.create_cluster_custom_object(*KUEUE, "clusterqueues", {
        "apiVersion": "/".join(KUEUE), "kind": "ClusterQueue", "metadata": {"name": queue},
        "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                 "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [{
                     "name": flavor, "resources": [{"name": "cpu", "nominalQuota": "40"},
                                                   {"name": "memory", "nominalQuota": "300Gi"},
                                                   {"name": "nvidia.com/gpu", "nominalQuota": "8"}]}]}]}})
    custom.create_namespaced_custom_object(*KUEUE, namespace, "localqueues", {
        "apiVersion": "/".join(KUEUE), "kind": "LocalQueue", "metadata": {"name": "gpu", "namespace": namespace},
        "spec": {"clusterQueue": queue}})


def queued_experiment(namespace: str, name: str) -> dict:
    """The example's trainer asks for all of the flavor's node (32 CPUs, 8 GPUs). A pod of an earlier
    stage or test still on that node left it Unschedulable ("Insufficient cpu") in CI, and the
    scheduler did not try it again within 60 s; so this trainer asks for 8 CPUs (the 8 GPUs still
    fill the quota), and workers and samplers run on the other node, as on a cluster whose GPU pool
    is the trainers' alone."""
    doc = example(namespace, name)
    doc["spec"]["trainer"]["resources"] = TRAINER_REQUESTS
    elsewhere = {"nodeSelector": {"kubernetes.io/hostname": OTHER_NODE}}
    doc["spec"]["scheduling"] = {"trainer": {"queueName": "gpu", "podAnnotations": HOLD},
                                 "worker": elsewhere, "sampler": elsewhere}
    return doc


def stage(body: dict, name: str) -> dict:
    return next((s for s in (body.get("status") or {}).get("stages", []) if s["name"] == name), {})


def sft_job(api, namespace: str, name: str):
    jobs = [j for j in children(api, namespace, name)["jobs"] if j.metadata.labels["negrl.io/stage"] == "sft"]
    return jobs[0] if jobs else None


def sft_pods(api, namespace: str, name: str) -> list:
    """The experiment's live sft pods, each read again by name: a GET goes to etcd, while a list may be
    served from the API server's watch cache, which was seen to miss a pod's binding for over a minute."""
    core = client.CoreV1Api(api)
    listed = [p for p in children(api, namespace, name)["pods"]
              if (p.metadata.labels or {}).get("negrl.io/stage") == "sft" and p.metadata.deletion_timestamp is None]
    fresh = []
    for pod in listed:
        try:
            fresh.append(core.read_namespaced_pod(pod.metadata.name, namespace))
        except ApiException as error:
            if error.status != 404:  # deleted since the list: not live any more
                raise
    return fresh


def pods_on(api, node: str) -> list[tuple]:
    """Every pod bound to `node`, in any namespace and phase, terminating ones included."""
    pods = client.CoreV1Api(api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    return [(p.metadata.namespace, p.metadata.name, p.status.phase, p.metadata.deletion_timestamp,
             p.metadata.finalizers, [c.resources.requests for c in p.spec.containers]) for p in pods]


def test_two_experiments_share_a_quota_that_fits_one_trainer(batch_controllers, kube_cluster, api, operator,
                                                             namespace, tmp_path):
    create_queues(api, namespace)
    names = ("first", "second")
    with Kubelet(api, namespace):
        for name in names:
            kubectl_apply(kube_cluster, queued_experiment(namespace, name), tmp_path)
        jobs = wait_for("both sft Jobs, one admitted", lambda: {n: sft_job(api, namespace, n) for n in names},
                        lambda found: all(found.values()) and sum(not j.spec.suspend for j in found.values()) == 1,
                        timeout=120)
        running = next(n for n in names if not jobs[n].spec.suspend)
        queued = next(n for n in names if n != running)
        assert jobs[queued].metadata.labels["kueue.x-k8s.io/queue-name"] == "gpu"

        # The queued experiment says so, with the reason, and stays queued while the first trains.
        body = wait_for("the queued status", lambda: experiment(api, namespace, queued),
                        lambda b: stage(b, "sft").get("state") == "Waiting", timeout=60)
        assert stage(body, "sft")["message"] == "queued in Kueue LocalQueue gpu: not admitted yet (quota or a free flavor)"
        progressing = next(c for c in body["status"]["conditions"] if c["type"] == "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("True", "Queued")
        try:
            (pod,) = wait_for("the admitted trainer pod on the flavor's node", lambda: sft_pods(api, namespace, running),
                              lambda pods: len(pods) == 1 and pods[0].spec.node_name, timeout=60)
        except AssertionError as error:  # seen Unschedulable in CI: show what held the node
            raise AssertionError(f"{error}\npods bound to {FLAVOR_NODE}: {pods_on(api, FLAVOR_NODE)}") from None
        assert pod.spec.node_selector["kubernetes.io/hostname"] == FLAVOR_NODE  # Kueue's flavor reached the pod
        assert pod.spec.node_name == FLAVOR_NODE
        assert sft_job(api, namespace, queued).spec.suspend is True and not sft_pods(api, namespace, queued)

        # spec.suspend under Kueue: the first's Workload is deactivated, Kueue suspends its Job and the
        # quota goes to the second, which runs on the flavor's node too.
        patch = ["patch", "nrx", running, "-n", namespace, "--type", "merge", "-p"]
        kube_cluster.kubectl(*patch, json.dumps({"spec": {"suspend": True}}))
        wait_for("Kueue to suspend the first Job", lambda: sft_job(api, namespace, running), lambda job: job.spec.suspend)
        assert workload_active(api, namespace, sft_job(api, namespace, running)) == [False]
        assert experiment(api, namespace, running)["status"]["phase"] == "Suspended"
        (pod,) = wait_for("the second trainer pod", lambda: sft_pods(api, namespace, queued),
                          lambda pods: len(pods) == 1 and pods[0].spec.node_name, timeout=90)
        assert pod.spec.node_name == FLAVOR_NODE

        # Resumed, the first is queued again behind the second; when the second's trainer finishes,
        # Kueue admits the first again.
        kube_cluster.kubectl(*patch, json.dumps({"spec": {"suspend": False}}))
        body = wait_for("the first queued again", lambda: experiment(api, namespace, running),
                        lambda b: b["status"]["phase"] == "Running" and stage(b, "sft").get("state") == "Waiting")
        assert workload_active(api, namespace, sft_job(api, namespace, running)) == [True]
        client.CoreV1Api(api).patch_namespaced_pod(pod.metadata.name, namespace,
                                                   {"metadata": {"annotations": {"kwok.negrl.io/hold": None}}})
        wait_for("the second sft to succeed", lambda: experiment(api, namespace, queued),
                 lambda b: stage(b, "sft").get("state") == "Succeeded", timeout=90)
        wait_for("the first trainer running again", lambda: sft_pods(api, namespace, running),
                 lambda pods: len(pods) == 1 and pods[0].spec.node_name == FLAVOR_NODE, timeout=90)
        wait_for("the first sft Running", lambda: experiment(api, namespace, running),
                 lambda b: stage(b, "sft").get("state") == "Running", timeout=60)


def workload_active(api, namespace: str, job) -> list[bool]:
    found = client.CustomObjectsApi(api).list_namespaced_custom_object(
        *KUEUE, namespace, "workloads", label_selector=f"kueue.x-k8s.io/job-uid={job.metadata.uid}")
    return [item["spec"].get("active", True) for item in found["items"]]


def create_open_queues(api, namespace: str, names: tuple[str, ...]) -> None:
    """LocalQueues `names`, each on its own ClusterQueue with room for everything (any node)."""
    custom = client.CustomObjectsApi(api)
    flavor = f"any-{namespace}"
    custom.create_cluster_custom_object(*KUEUE, "resourceflavors", {
        "apiVersion": "/".join(KUEUE), "kind": "ResourceFlavor", "metadata": {"name": flavor}, "spec": {}})
    for name in names:
        custom.create_cluster_custom_object(*KUEUE, "clusterqueues", {
            "apiVersion": "/".join(KUEUE), "kind": "ClusterQueue", "metadata": {"name": f"{name}-{namespace}"},
            "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                     "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [{
                         "name": flavor, "resources": [{"name": "cpu", "nominalQuota": "64"},
                                                       {"name": "memory", "nominalQuota": "512Gi"},
                                                       {"name": "nvidia.com/gpu", "nominalQuota": "16"}]}]}]}})
        custom.create_namespaced_custom_object(*KUEUE, namespace, "localqueues", {
            "apiVersion": "/".join(KUEUE), "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": f"{name}-{namespace}"}})


@pytest.mark.parametrize("path", ["examples/gsm8k.yaml", "examples/math.yaml"])
def test_examples_run_to_succeeded_under_kueue(batch_controllers, kube_cluster, api, operator, namespace, tmp_path,
                                               path):
    """The examples as written, with their queue names (placement that kwok's nodes lack dropped, and
    math's 7B resources scaled to a kwok node): every queued Job goes through Kueue and the
    experiment succeeds."""
    original = yaml.safe_load((REPO / path).read_text())
    doc = example(namespace, "ex", path)
    doc["spec"]["scheduling"] = {
        component: {"queueName": placement["queueName"]}
        for component, placement in original["spec"]["scheduling"].items() if placement.get("queueName")}
    doc["spec"]["trainer"]["resources"] = TRAINER_REQUESTS
    create_open_queues(api, namespace, tuple({p["queueName"] for p in doc["spec"]["scheduling"].values()}))
    with Kubelet(api, namespace):
        kubectl_apply(kube_cluster, doc, tmp_path)
        done = wait_for("Succeeded", lambda: experiment(api, namespace, "ex"),
                        lambda body: (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"), timeout=300)
    assert done["status"]["phase"] == "Succeeded", done["status"]["message"]
    queued = [job for job in children(api, namespace, "ex")["jobs"] if job.metadata.labels.get("kueue.x-k8s.io/queue-name")]
    # Every queued Job was created suspended, so one that completed was let run by Kueue. Whether a
    # finished Job reads suspend again is Kueue's business (seen in CI: a completed eval Job with
    # suspend true once its Workload finished), so completion is what is asserted, not the flag.
    unfinished = [(job.metadata.labels, shown(job)) for job in queued if not job.status.succeeded]
    assert queued and not unfinished, (unfinished, shown(done))
    workloads = client.CustomObjectsApi(api).list_namespaced_custom_object(*KUEUE, namespace, "workloads")["items"]
    admitted = {w["metadata"]["labels"]["kueue.x-k8s.io/job-uid"] for w in workloads
                if any(c["type"] == "Admitted" and c["status"] == "True" for c in w["status"].get("conditions", []))
                or any(c["type"] == "Finished" for c in w["status"].get("conditions", []))}
    assert {job.metadata.uid for job in queued} <= admitted  # every queued Job went through Kueue
