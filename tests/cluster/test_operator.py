"""The operator on a real API server: the chart installed with helm, the operator run as a local
process with the chart's ServiceAccount token (not cluster-admin), experiments applied with kubectl.

No kubelet runs containers here: kwok finishes Job pods, and this test plays the kubelet's other
part by writing each finished pod's termination message (the stage's JSON summary) into its status.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from negrl_sampler.stages.evaluate import evaluation_figures
from tests.fixtures.cluster import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
RELEASE, SYSTEM = "negrl", "negrl-system"
INSTANCE = "app.kubernetes.io/instance"
GROUP, VERSION, PLURAL = "negrl.io", "v1alpha1", "negrlexperiments"
ACCURACY = {"sft": 0.31, "rft": 0.35, "outcome-dpo": 0.33, "step-dpo": 0.42}




def summary_for(stage: str) -> dict:
    """A realistic one-line summary, as each stage command prints it (per shard for sharded stages)."""
    if stage.startswith("eval-"):
        policy = stage.removeprefix("eval-")
        # the keys and figures `negrl evaluate` itself writes (same functions), for 100 questions
        correct = round(ACCURACY.get(policy, 0.3) * 100)
        counts = {"questions": 100, "greedy_correct": correct, "greedy_unparseable": 2,
                  "pass_at_k_correct": correct + 21, "sampled_correct": 4 * correct, "samples": 400}
        return {"stage": "evaluate", "shard": "0/1", "policy": policy, **counts, **evaluation_figures(counts, 4),
                "complete": True, "request_errors": 0}
    return {
        "prepare": {"stage": "prepare", "train": 4000, "test": 1319},
        "sample": {"stage": "sample", "questions": 1000, "samples": 8000, "correct": 3100, "wrong": 4700,
                   "unparseable": 200},
        "credit": {"stage": "credit", "negatives": 1200, "pits": 800, "rollouts": 30000, "generated_tokens": 5200000},
        "rft-data": {"stage": "pairs", "rft": 3000},
        "step-pairs": {"stage": "pairs", "step": 2400, "outcome": 2400},  # the keys the pairs stage writes
    }.get(stage, {"stage": stage, "steps": 375, "final_loss": 0.41, "examples": 4000})


class Kubelet:
    """Writes the termination message of every finished Job pod in a namespace, as a kubelet would."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.core, self.namespace = client.CoreV1Api(api), namespace
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.written = 0

    def __enter__(self) -> Kubelet:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.report_finished()
            except ApiException:
                pass  # a pod deleted under us; the next round sees the new state
            self.stop.wait(0.2)

    def report_finished(self) -> None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector="batch.kubernetes.io/job-name").items
        for pod in pods:
            statuses = pod.status.container_statuses or []
            terminated = [s.state.terminated for s in statuses if s.state and s.state.terminated]
            stage = (pod.metadata.labels or {}).get("negrl.io/stage")  # a clean-up Job's pod has none
            if pod.status.phase != "Succeeded" or not terminated or terminated[0].message or not stage:
                continue
            message = json.dumps(summary_for(stage), separators=(",", ":"))
            patched = [client.ApiClient().sanitize_for_serialization(s) for s in statuses]
            for status in patched:
                status["state"]["terminated"]["message"] = message
            self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace,
                                                  {"status": {"containerStatuses": patched}})
            self.written += 1


class OperatorProcess:
    """`negrl operator` as a local process with a kubeconfig holding the chart's ServiceAccount token."""

    def __init__(self, kubeconfig: Path, log: Path, env: dict[str, str] | None = None):
        self.kubeconfig, self.log, self.port, self.env = kubeconfig, log, free_port(), env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # The default safety-net interval (300 s): child watch events alone must move every stage on.
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "negrl_operator.cli", "operator", "--port",
                                          str(self.port), "--stall-after", "30"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=REPO)
        wait_for("operator /healthz", lambda: self.get("/healthz"), lambda body: body == "ok\n", timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.read().decode()
        except OSError as error:
            return f"unreachable: {error}"

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])


@pytest.fixture(scope="module")
def api(kube_cluster) -> Iterator[client.ApiClient]:
    with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="module")
def chart(kube_cluster):
    kube_cluster.kubectl("create", "namespace", SYSTEM, check=False)  # other cluster modules use it too
    # The chart's own operator pods are kwok pods here (the tests run the operator as a local
    # process); one replica of 100m leaves a node's 32 CPUs free for the 32-CPU trainer pod.
    kube_cluster.helm("upgrade", "--install", RELEASE, str(REPO / "charts" / "negrl"), "--namespace", SYSTEM,
                      "--wait", "--set", "operator.replicas=1", "--timeout", "120s", timeout=180)
    yield
    kube_cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM, check=False)


@pytest.fixture(scope="module")
def operator_kubeconfig(kube_cluster, chart, tmp_path_factory) -> Path:
    """A kubeconfig for the chart's ServiceAccount (a TokenRequest), so the operator has its RBAC only."""
    token = kube_cluster.kubectl("create", "token", RELEASE, "-n", SYSTEM, "--duration", "2h").stdout.strip()
    admin = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    cluster = copy.deepcopy(admin["clusters"][0])
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": "negrl-operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "negrl-operator"}}],
        "current-context": "operator",
    }))
    return path


@pytest.fixture(scope="module")
def operator(operator_kubeconfig, tmp_path_factory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator-log") / "operator.log")
    process.start()
    yield process
    process.stop()
    print(process.tail())


@pytest.fixture
def namespace(kube_cluster, api) -> Iterator[str]:
    """A namespace with a bound ReadWriteMany volume `negrl-data` (hostPath; kwok never mounts it)."""
    name = f"nrx-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    core.create_persistent_volume({
        "metadata": {"name": f"{name}-data"},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "hostPath": {"path": f"/tmp/{name}"}, "claimRef": {"namespace": name, "name": "negrl-data"}},
    })
    core.create_namespaced_persistent_volume_claim(name, {
        "metadata": {"name": "negrl-data"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"{name}-data",
                 "resources": {"requests": {"storage": "1Ti"}}},
    })
    yield name
    for delete, target in ((core.delete_namespace, name), (core.delete_persistent_volume, f"{name}-data")):
        try:
            delete(target)
        except ApiException as error:
            if error.status != 404:  # a test may have deleted its namespace itself
                raise
    # The next test must find the fake nodes free: a pod of this one still bound there (a sampler,
    # a released trainer) would hold its GPUs while the namespace goes. The namespace controller
    # deletes pods with their grace period; a terminating namespace creates no new ones, so they
    # can be stopped at once. Only a pod bound to a node and not finished holds its resources.
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    wait_for(f"the pods of namespace {name} to stop", lambda: [
        pod for pod in core.list_namespaced_pod(name).items
        if pod.spec.node_name and pod.status.phase not in ("Succeeded", "Failed")], lambda holding: not holding)


def example(namespace: str, name: str, path: str = "examples/gsm8k.yaml", **spec_changes) -> dict:
    """An example manifest moved to the test namespace; kwok's nodes have no GPU-product label, so the
    example's placement (node selectors) is dropped."""
    doc = yaml.safe_load((REPO / path).read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    doc["spec"].pop("scheduling", None)
    doc["spec"].update(spec_changes)
    return doc


def kubectl_apply(kube_cluster, doc: dict, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess:
    path = tmp_path / f"{doc['metadata']['name']}-{uuid.uuid4().hex[:4]}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return kube_cluster.kubectl("apply", "-f", str(path), check=check)


def experiment(api, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def phase(body: dict) -> str:
    return (body.get("status") or {}).get("phase", "")


def children(api, namespace: str, name: str) -> dict[str, list]:
    selector = f"{INSTANCE}={name}"
    core, batch, apps = client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api)
    return {
        "jobs": batch.list_namespaced_job(namespace, label_selector=selector).items,
        "deployments": apps.list_namespaced_deployment(namespace, label_selector=selector).items,
        "services": core.list_namespaced_service(namespace, label_selector=selector).items,
        "configmaps": core.list_namespaced_config_map(namespace, label_selector=selector).items,
        "pods": core.list_namespaced_pod(namespace, label_selector=selector).items,
    }


def event_reasons(kube_cluster, namespace: str, name: str) -> list[str]:
    out = kube_cluster.kubectl("get", "events", "-n", namespace, "-o", "json", "--field-selector",
                               f"involvedObject.kind=NegRLExperiment,involvedObject.name={name}").stdout
    return [event["reason"] for event in json.loads(out)["items"]]


# ---- tests -----------------------------------------------------------------------------------

def test_operator_runs_with_the_charts_service_account_only(kube_cluster, operator, operator_kubeconfig):
    env = {**kube_cluster.env, "KUBECONFIG": str(operator_kubeconfig)}

    def can(*args: str) -> str:
        return subprocess.run(["kubectl", "auth", "can-i", *args], env=env, capture_output=True, text=True).stdout.strip()

    assert can("create", "jobs.batch", "-n", "anywhere") == "yes"
    assert can("patch", "negrlexperiments.negrl.io/status", "-n", "anywhere") == "yes"
    assert can("get", "secrets", "-n", "anywhere") == "no"
    assert can("create", "pods", "-n", "anywhere") == "no"
    assert can("*", "*") == "no"
    assert operator.get("/healthz") == "ok\n"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"stages": {"sampling": {"params": {"samplesPerQuestion": 0}}}},
                     "spec.stages.sampling.params.samplesPerQuestion", id="bound"),
        pytest.param({"stages": {"credit": {"enabled": False}}}, "stepDpo needs credit.enabled", id="cel-rule"),
        pytest.param({"sampler": {"tensorParalel": 2}}, "tensorParalel", id="unknown-field"),
        pytest.param({"trainer": {"zeroStage": 5}}, "spec.trainer.zeroStage", id="enum"),
        # None: the field is left out of the manifest; the admission rule names it and the fix
        pytest.param({"storage": None}, "spec.storage is required on a cluster", id="no-storage"),
    ],
)
def test_invalid_manifest_is_rejected_naming_the_field(kube_cluster, chart, namespace, tmp_path, changes, field):
    doc = example(namespace, "invalid", **changes)
    doc["spec"] = {key: value for key, value in doc["spec"].items() if value is not None}
    result = kubectl_apply(kube_cluster, doc, tmp_path, check=False)
    assert result.returncode != 0 and field in result.stderr, result.stderr


def test_experiment_walks_every_stage_to_succeeded(kube_cluster, api, operator, namespace, tmp_path):
    name = "gsm8k"
    with Kubelet(api, namespace):
        kubectl_apply(kube_cluster, example(namespace, name), tmp_path)
        wait_for("the sample stage", lambda: experiment(api, namespace, name), lambda body: any(
            s["name"] == "sample" and s["state"] != "Pending" for s in (body.get("status") or {}).get("stages", [])),
            timeout=60)
        before = {job.metadata.name: job.metadata.uid for job in children(api, namespace, name)["jobs"]}
        operator.restart()  # mid-experiment: the new process adopts what exists
        done = wait_for("Succeeded", lambda: experiment(api, namespace, name),
                        lambda body: phase(body) in ("Succeeded", "Failed"), timeout=150)
    status = done["status"]
    assert status["phase"] == "Succeeded", operator.tail()
    stages = {stage["name"]: stage for stage in status["stages"]}
    assert len(stages) == 13 and all(s["state"] == "Succeeded" and s["startTime"] and s["finishTime"]
                                     for s in stages.values())
    assert stages["sft"]["artifact"] == f"/data/experiments/{namespace}/{name}/{done['metadata']['uid']}/sft"
    assert stages["sample"]["summary"]["samples"] == 4 * 8000  # four shards, summed
    results = status["results"]
    assert {p["policy"]: p["accuracy"] for p in results["policies"]} == ACCURACY
    assert (results["bestPolicy"], results["bestAccuracy"]) == ("step-dpo", 0.42)
    counts = results["counts"]
    assert (counts["positives"], counts["pits"], counts["stepPairs"], counts["outcomePairs"]) == (12400, 3200, 2400, 2400)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Degraded"]["status"]) == ("True", "False")
    assert all(c["observedGeneration"] == done["metadata"]["generation"] for c in conditions.values())

    jobs = children(api, namespace, name)["jobs"]
    assert sorted(job.metadata.labels["negrl.io/stage"] for job in jobs) == sorted(stages)  # one Job per stage
    assert all(before[job.metadata.name] == job.metadata.uid for job in jobs if job.metadata.name in before)
    assert not children(api, namespace, name)["deployments"]  # samplers go when nothing needs them

    reasons = event_reasons(kube_cluster, namespace, name)
    assert {"StageStarted", "StageSucceeded", "StageWaiting", "Succeeded"} <= set(reasons)
    printed = kube_cluster.kubectl("get", "nrx", "-n", namespace).stdout
    print(printed)
    table = printed.split()  # a finished experiment has no stage running: that column is empty
    assert table[:7] == ["NAME", "PHASE", "STAGE", "READY", "REASON", "BEST", "AGE"]
    assert table[7:12] == [name, "Succeeded", "True", "Succeeded", "0.42"]
    assert 'policy="step-dpo"} 0.42' in operator.get("/metrics")


def test_deleting_an_experiment_removes_every_child(kube_cluster, api, operator, namespace, tmp_path):
    name = "to-delete"
    with Kubelet(api, namespace):
        kubectl_apply(kube_cluster, example(namespace, name), tmp_path)
        wait_for("a sampler", lambda: children(api, namespace, name), lambda found: found["deployments"], timeout=60)
    kube_cluster.kubectl("delete", "nrx", name, "-n", namespace, "--wait=true")
    wait_for("no children", lambda: children(api, namespace, name),
             lambda found: not any(found.values()), timeout=60)


def test_suspend_and_resume(kube_cluster, api, operator, namespace, tmp_path):
    name = "pausable"
    with Kubelet(api, namespace):
        kubectl_apply(kube_cluster, example(namespace, name, suspend=True), tmp_path)
        wait_for("Suspended", lambda: experiment(api, namespace, name), lambda body: phase(body) == "Suspended")
        time.sleep(2)
        assert not children(api, namespace, name)["jobs"]
        patch = ["patch", "nrx", name, "-n", namespace, "--type", "merge", "-p"]
        kube_cluster.kubectl(*patch, '{"spec":{"suspend":false}}')
        wait_for("a sampler", lambda: children(api, namespace, name), lambda found: found["deployments"], timeout=60)
        kube_cluster.kubectl(*patch, '{"spec":{"suspend":true}}')
        wait_for("samplers at zero", lambda: children(api, namespace, name),
                 lambda found: all(d.spec.replicas == 0 for d in found["deployments"]))
        jobs = {job.metadata.name for job in children(api, namespace, name)["jobs"]}
        time.sleep(3)
        assert phase(experiment(api, namespace, name)) == "Suspended"
        assert {job.metadata.name for job in children(api, namespace, name)["jobs"]} == jobs  # none created
        kube_cluster.kubectl(*patch, '{"spec":{"suspend":false}}')
        done = wait_for("Succeeded", lambda: experiment(api, namespace, name),
                        lambda body: phase(body) in ("Succeeded", "Failed"), timeout=150)
    assert phase(done) == "Succeeded"
    assert {"Suspended", "Resumed"} <= set(event_reasons(kube_cluster, namespace, name))


def test_failing_job_ends_in_failed_with_its_message(kube_cluster, api, operator, namespace, tmp_path):
    name = "broken"
    error = {"stage": "prepare", "error": "/data/datasets/gsm8k/train.jsonl: no such file"}
    doc = example(namespace, name)
    doc["spec"]["worker"]["backoffLimit"] = 1
    doc["spec"]["scheduling"] = {"worker": {"podAnnotations": {  # kwok: the pod exits 1 with this message
        "kwok.negrl.io/exit-code": "1", "kwok.negrl.io/termination-message": json.dumps(error)}}}
    kubectl_apply(kube_cluster, doc, tmp_path)
    done = wait_for("Failed", lambda: experiment(api, namespace, name), lambda body: phase(body) == "Failed")
    status = done["status"]
    assert status["message"] == f"stage prepare failed: {error['error']}"
    assert status["stage"] == "prepare"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "StageFailed")
    reasons = event_reasons(kube_cluster, namespace, name)
    assert {"PodFailed", "StageFailed", "Failed"} <= set(reasons)  # Degraded while retrying, then Failed
    jobs = children(api, namespace, name)["jobs"]
    assert [job.metadata.labels["negrl.io/stage"] for job in jobs] == ["prepare"]  # nothing after a failure
