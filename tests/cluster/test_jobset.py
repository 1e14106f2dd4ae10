"""Multi-node training that loses a rank. On the real JobSet controller (trainer.launcher JobSet): the
lost rank fails its Job, JobSet recreates the whole group (failurePolicy.maxRestarts). On a plain
Indexed Job (launcher Job): the Job fails at once (backoffLimit 0) and the operator deletes it and
starts the group again. Either way the experiment keeps running, then finishes with the summary of
the restarted group's rank 0."""

from __future__ import annotations

import time

from kubernetes import client

from tests.cluster.test_operator import Kubelet, children, example, experiment, kubectl_apply
from tests.fixtures.cluster import wait_for

JOBSET = ("jobset.x-k8s.io", "v1alpha2", "jobsets")


def trainer_pods(api, namespace: str, jobset: str) -> list:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={jobset}").items
    return sorted((p for p in pods if p.metadata.deletion_timestamp is None and p.status.phase == "Running"),
                  key=lambda p: p.metadata.annotations["batch.kubernetes.io/job-completion-index"])


def sft_stage(api, namespace: str, name: str, jobset: str) -> dict:
    """The sft stage's status, with what the JobSet and the pods show (for a timeout's message)."""
    status = experiment(api, namespace, name)["status"]
    body = client.CustomObjectsApi(api).get_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], jobset)
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={jobset}")
    jobs = client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={jobset}")
    return {"stage": next(s for s in status["stages"] if s["name"] == "sft"), "jobset": body.get("status"),
            "pods": [(p.metadata.name, p.status.phase, p.metadata.finalizers) for p in pods.items],
            "jobs": [(j.metadata.name, j.status.to_dict()) for j in jobs.items]}


def kill(core, pod, namespace: str) -> None:
    """What the kubelet reports for a rank that died (exit 137, no disruption), then the pod goes."""
    killed = [{"name": c.name, "image": c.image, "ready": False, "restartCount": 0, "state": {"terminated": {
        "exitCode": 137, "reason": "Error", "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:01Z"}}} for c in pod.spec.containers]
    core.patch_namespaced_pod_status(pod.metadata.name, namespace,
                                     {"status": {"phase": "Failed", "containerStatuses": killed}})
    core.delete_namespaced_pod(pod.metadata.name, namespace)


def lose_rank_one(core, namespace: str, pods: list, running, launcher: str) -> list:
    """Kill rank 1's pod; wait until `running()` shows a whole new group of two pods, and return it."""
    lost = time.monotonic()
    kill(core, pods[1], namespace)
    before = {p.metadata.uid for p in pods}
    restarted = wait_for("a restarted group", running,
                         lambda found: len(found) == 2 and not ({p.metadata.uid for p in found} & before), timeout=120)
    print(f"lost rank ({launcher}) -> restarted group running: {time.monotonic() - lost:.2f}s")
    return restarted


def test_lost_rank_restarts_the_group_without_failing_the_experiment(batch_controllers, kube_cluster, api, operator,
                                                                     namespace, tmp_path):
    name = "multi"
    doc = example(namespace, name)
    doc["spec"]["trainer"].update({"nodes": 2, "launcher": "JobSet", "maxRestarts": 2,
                                   "resources": {"requests": {"cpu": 4, "memory": "16Gi"}}})
    doc["spec"]["scheduling"] = {"trainer": {"podAnnotations": {"kwok.negrl.io/hold": "true"}}}
    core = client.CoreV1Api(api)
    jobset = f"{name}-trainer-sft"
    with Kubelet(api, namespace):
        kubectl_apply(kube_cluster, doc, tmp_path)
        pods = wait_for("both ranks running", lambda: trainer_pods(api, namespace, jobset),
                        lambda found: len(found) == 2, timeout=120)
        body = client.CustomObjectsApi(api).get_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], jobset)
        assert body["spec"]["failurePolicy"]["maxRestarts"] == 2
        command = pods[0].spec.containers[0].command
        assert f"--rdzv-endpoint={jobset}-node-0-0.{jobset}.{namespace}.svc:29500" in command
        assert pods[0].spec.hostname == f"{jobset}-node-0-0" and pods[0].spec.subdomain == jobset

        restarted = lose_rank_one(core, namespace, pods, lambda: trainer_pods(api, namespace, jobset), "JobSet")
        body = client.CustomObjectsApi(api).get_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], jobset)
        assert body["status"]["restarts"] == 1 and not body["status"].get("terminalState")
        status = experiment(api, namespace, name)["status"]
        assert status["phase"] == "Running"
        sft = next(s for s in status["stages"] if s["name"] == "sft")
        assert sft["state"] == "Running"

        for pod in restarted:  # the group trains to the end
            core.patch_namespaced_pod(pod.metadata.name, namespace,
                                      {"metadata": {"annotations": {"kwok.negrl.io/hold": None}}})
        sft = wait_for("sft Succeeded", lambda: sft_stage(api, namespace, name, jobset),
                       lambda found: found["stage"]["state"] in ("Succeeded", "Failed"), timeout=90)["stage"]
    assert sft["state"] == "Succeeded" and sft["summary"]["steps"] == 375  # rank 0's termination message
    assert [job.metadata.name for job in children(api, namespace, name)["jobs"]
            if job.metadata.labels["negrl.io/stage"] == "sft"] == [f"{jobset}-node-0"]


def job_pods(api, namespace: str, job: str) -> list:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}")
    return sorted((p for p in pods.items if p.metadata.deletion_timestamp is None and p.status.phase == "Running"),
                  key=lambda p: p.metadata.annotations["batch.kubernetes.io/job-completion-index"])


def test_a_plain_job_that_loses_a_rank_is_restarted_whole_by_the_operator(kube_cluster, api, operator, namespace,
                                                                           tmp_path):
    name, job = "plain", "plain-trainer-sft"
    doc = example(namespace, name)
    doc["spec"]["trainer"].update({"nodes": 2, "launcher": "Job", "maxRestarts": 2,
                                   "resources": {"requests": {"cpu": 4, "memory": "16Gi"}}})
    doc["spec"]["scheduling"] = {"trainer": {"podAnnotations": {"kwok.negrl.io/hold": "true"}}}
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    with Kubelet(api, namespace):
        kubectl_apply(kube_cluster, doc, tmp_path)
        pods = wait_for("both ranks running", lambda: job_pods(api, namespace, job), lambda found: len(found) == 2,
                        timeout=120)
        assert batch.read_namespaced_job(job, namespace).spec.backoff_limit == 0  # no in-place replacement
        assert f"--rdzv-endpoint={job}-0.{job}-hl.{namespace}.svc:29500" in pods[0].spec.containers[0].command
        first_uid = batch.read_namespaced_job(job, namespace).metadata.uid

        restarted = lose_rank_one(core, namespace, pods, lambda: job_pods(api, namespace, job), "plain Job")
        assert batch.read_namespaced_job(job, namespace).metadata.uid != first_uid  # a new Job: every pod new
        status = experiment(api, namespace, name)["status"]
        sft = next(s for s in status["stages"] if s["name"] == "sft")
        assert (status["phase"], sft["state"], sft["restarts"]) == ("Running", "Running", 1)

        for pod in restarted:  # the group trains to the end
            core.patch_namespaced_pod(pod.metadata.name, namespace,
                                      {"metadata": {"annotations": {"kwok.negrl.io/hold": None}}})
        sft = wait_for("sft Succeeded", lambda: next(s for s in experiment(api, namespace, name)["status"]["stages"]
                                                     if s["name"] == "sft"),
                       lambda found: found["state"] in ("Succeeded", "Failed"), timeout=90)
    assert (sft["state"], sft["restarts"], sft["summary"]["steps"]) == ("Succeeded", 1, 375)
