"""A user's first `kubectl apply`, on a node that runs the pods: the chart installed with helm from
the locally built operator image, a one-seed star-graph experiment run by real stage pods (worker
image), a real vLLM CPU sampler per policy (sampler-cpu image) reached through its Service name, to
Succeeded; the status agrees with the artifacts on the volume; deleting it removes every child.

Beside it, while it trains, a second experiment of two stages (prepare -> synthesize) has the
operator serve a teacher (#22): the first experiment's tiny base model as a vLLM CPU Deployment of
its own, called by a sharded synthesize Job, deleted once that stage is done."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from negrl_operator.api.status import camel
from tests.fixtures.cluster import wait_for
from tests.fixtures.prometheus import Discovery, Prometheus, rule_groups, scrape_configs

REPO = Path(__file__).resolve().parents[2]
RELEASE, SYSTEM = "negrl", "negrl-system"
INSTANCE = "app.kubernetes.io/instance"
GROUP, VERSION, PLURAL = "negrl.io", "v1alpha1", "negrlexperiments"
SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}}
RUN_TIMEOUT_S = 3000
TEACHER_EXPERIMENT = "synthesis"


@pytest.fixture(scope="module")
def api(node_cluster):
    with node_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture(scope="module")
def chart(node_cluster):
    repository, tag = node_cluster.images["operator"].rsplit(":", 1)
    node_cluster.kubectl("create", "namespace", SYSTEM)
    node_cluster.helm("install", RELEASE, str(REPO / "charts" / "negrl"), "--namespace", SYSTEM, "--wait",
                      "--timeout", "300s", "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                      "--set", "image.pullPolicy=Never", "--set", "operator.reconcileInterval=2", timeout=360)
    yield
    node_cluster.helm("uninstall", RELEASE, "--namespace", SYSTEM, "--wait", check=False, timeout=120)


@pytest.fixture(scope="module")
def prometheus(node_cluster, chart, tmp_path_factory):
    """Debian's Prometheus scraping as the chart's ServiceMonitor and PodMonitor say, with its rules."""
    rendered = node_cluster.helm(
        "template", RELEASE, str(REPO / "charts" / "negrl"), "--namespace", SYSTEM,
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
        "--set", "metrics.prometheusRule.enabled=true",
        # this experiment's pods live seconds, not hours: scrape often enough to see each one twice
        "--set", "metrics.podMonitor.interval=2s", "--set", "metrics.serviceMonitor.interval=5s").stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    folder = tmp_path_factory.mktemp("prometheus")
    with node_cluster.api_client() as api_client:
        discovery = Discovery(api_client, folder / "targets", period=1.0).start()
        server = Prometheus(folder, scrape_configs(docs, folder / "targets"), rule_groups(docs)).start()
        yield server
        server.stop()
        discovery.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard, expr) of every panel, with the template variables set to "All"."""
    found = []

    def walk(node, board: str) -> None:
        if isinstance(node, dict):
            if "expr" in node:
                found.append((board, re.sub(r"\$(namespace|experiment|stage|policy)", ".*", node["expr"])))
            for value in node.values():
                walk(value, board)
        elif isinstance(node, list):
            for value in node:
                walk(value, board)

    for path in sorted((REPO / "charts" / "negrl" / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text()).get("panels", []), path.stem)
    return found


def through_service(node_cluster, path: str) -> str:
    """GET on the operator's metrics Service, proxied by the API server (all on this machine)."""
    raw = f"/api/v1/namespaces/{SYSTEM}/services/{RELEASE}-metrics:metrics/proxy{path}"
    return node_cluster.kubectl("get", "--raw", raw).stdout


def experiment_manifest(namespace: str, name: str, images: dict[str, str]) -> dict:
    doc = yaml.safe_load((REPO / "examples" / "stargraph.yaml").read_text())
    spec = doc["spec"]
    doc["metadata"] = {"name": name, "namespace": namespace}
    spec["seeds"], spec["sweep"] = [0], {"sftMultipliers": []}
    spec["data"]["source"].update(trainSize=400, testSize=40)
    spec["data"]["syntheticSize"] = 64
    spec["stages"]["sft"]["params"]["epochs"] = 2
    del spec["stages"]["sft"]["params"]["minSteps"], spec["stages"]["sft"]["select"]
    for stage in ("rft", "stepDpo", "outcomeDpo"):
        spec["stages"][stage]["params"]["epochs"] = 1
    spec["stages"]["sampling"]["params"]["samplesPerQuestion"] = 2
    spec["stages"]["credit"]["params"].update(rollouts=2, negativesPerQuestion=2)
    spec["stages"]["eval"]["params"]["k"] = 2
    spec["sampler"] = {"image": images["sampler-cpu"], "gpus": 0, "cpuKvCacheGb": 1, "maxModelLen": 64,
                       "startupTimeoutS": 900, "resources": SMALL}
    spec["worker"] = {"image": images["worker"], "shards": 2, "resources": SMALL}
    # two training pods: torchrun's c10d rendezvous at pod 0's name under the headless Service
    spec["trainer"].update(resources=SMALL, nodes=2)
    return doc


def teacher_manifest(namespace: str, base_model: str, images: dict[str, str]) -> dict:
    """Two stages: prepare, then synthesize with a served teacher, the main experiment's tiny scratch
    base model (untrained), asked for 2 solutions of each of the 64 training questions in one request
    (n=2). An untrained model rarely finds a path, so D_syn may be empty: what is checked is the
    teacher's Deployment, the synthesize Job calling it through its Service, and the figures."""
    doc = experiment_manifest(namespace, TEACHER_EXPERIMENT, images)
    spec = doc["spec"]
    spec["stages"] = {stage: {"enabled": False}
                      for stage in ("sft", "sampling", "rft", "credit", "stepDpo", "outcomeDpo", "eval")}
    spec["teacher"] = {
        "served": {"model": base_model, "gpus": 0, "maxModelLen": 64, "maxConcurrency": 8, "resources": SMALL},
        "synthesis": {"solutionTemplate": spec["data"]["prompt"]["template"], "solutionsPerQuestion": 2,
                      "temperature": 1.0, "maxTokens": 8},
    }
    return doc


def stage_state(body: dict, name: str) -> str:
    return next((s["state"] for s in (body.get("status") or {}).get("stages", []) if s["name"] == name), "")


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


def get_experiment(api, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


@pytest.mark.timeout(RUN_TIMEOUT_S + 600)
def test_stargraph_experiment_runs_to_succeeded_on_real_pods(node_cluster, api, chart, prometheus, tmp_path):
    core = client.CoreV1Api(api)
    operator_pods = core.list_namespaced_pod(SYSTEM, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
    assert [p.status.phase for p in operator_pods] == ["Running", "Running"]  # the chart's two replicas
    assert through_service(node_cluster, "/healthz") == "ok\n"
    assert "negrl_operator_" in through_service(node_cluster, "/metrics")

    namespace, name = f"e2e-{uuid.uuid4().hex[:6]}", "stargraph"
    core.create_namespace({"metadata": {"name": namespace}})
    volume = node_cluster.claim(api, namespace, "negrl-data")
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment_manifest(namespace, name, node_cluster.images)))
    started, started_at = time.monotonic(), time.time()
    node_cluster.kubectl("apply", "-f", str(path))
    # the teacher experiment serves this one's base model: applied once this one's prepare wrote it
    body = wait_for("the base model", lambda: get_experiment(api, namespace, name),
                    lambda found: stage_state(found, "prepare") in ("Succeeded", "Failed"), timeout=900)
    base_model = f"/data/negrl/{namespace}/{name}/{body['metadata']['uid']}/prepare/model"
    teacher_path = tmp_path / "teacher.yaml"
    teacher_path.write_text(yaml.safe_dump(teacher_manifest(namespace, base_model, node_cluster.images)))
    node_cluster.kubectl("apply", "-f", str(teacher_path))
    done = wait_for("the experiment to finish", lambda: get_experiment(api, namespace, name),
                    lambda body: (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                    timeout=RUN_TIMEOUT_S)
    wall_s = time.monotonic() - started
    print(f"e2e star-graph experiment: {done['status']['phase']} in {wall_s:.0f}s")
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:6000]

    stages = {stage["name"]: stage for stage in status["stages"]}
    assert all(stage["state"] == "Succeeded" and stage["summary"] for stage in stages.values())
    uid = done["metadata"]["uid"]  # <mount>/<storage.path>/<namespace>/<name>/<uid>/<stage>
    assert stages["sft"]["artifact"] == f"/data/negrl/{namespace}/{name}/{uid}/sft"
    root = volume / "negrl" / namespace / name / uid
    # sharded stages: both pods' summaries add up to the stage manifest the last shard wrote
    for stage in ("sample", "credit"):
        manifest = json.loads((root / stage / "manifest.json").read_text())
        assert manifest["shards"] == 2
        for key, value in manifest["summary"].items():
            if isinstance(value, int):
                assert stages[stage]["summary"][camel(key)] == value, (stage, key)  # the status's key style
    results = status["results"]
    evaluated = {p["policy"]: p for p in results["policies"]}
    assert set(evaluated) == {"sft", "rft", "step-dpo", "outcome-dpo"}
    for policy, found in evaluated.items():
        written = json.loads((root / f"eval-{policy}" / "summary.json").read_text())
        assert (found["accuracy"], found["passK"], found["k"], found["questions"]) == (
            written["pass_at_1"], written["pass_at_k"], 2, written["questions"])
        assert [found["accuracyCiLow"], found["accuracyCiHigh"]] == written["pass_at_1_ci95"]
    assert results["bestAccuracy"] == max(p["accuracy"] for p in evaluated.values())
    assert results["counts"]["samples"] == json.loads((root / "sample" / "manifest.json").read_text())["summary"]["samples"]
    # models written by uid 1000 are readable by every user (the samplers loaded them)
    assert all(path.stat().st_mode & 0o004 for path in (root / "sft" / "model").iterdir())

    # every training stage ran as two ranks that met through the headless Service's DNS name
    for stage in ("sft", "rft", "step-dpo", "outcome-dpo"):
        job = client.BatchV1Api(api).read_namespaced_job(stages[stage]["job"], namespace)
        assert (job.spec.completions, job.status.succeeded) == (2, 2), (stage, job.status)

    sample_job = stages["sample"]["job"]
    logs = node_cluster.kubectl("logs", f"job/{sample_job}", "-n", namespace).stdout
    assert "(100%)" in logs and '"stage":"sample"' in logs, logs[-2000:]
    train_logs = node_cluster.kubectl("logs", f"job/{stages['sft']['job']}", "-n", namespace).stdout
    assert "progress: " in train_logs and "(100%)" in train_logs, train_logs[-2000:]

    check_teacher(node_cluster, api, namespace, volume)
    check_monitoring(prometheus, started_at=started_at)

    node_cluster.kubectl("delete", "nrx", name, TEACHER_EXPERIMENT, "-n", namespace, "--wait=true", timeout=180)
    wait_for("no children", lambda: [children(api, namespace, owner) for owner in (name, TEACHER_EXPERIMENT)],
             lambda found: not any(any(kinds.values()) for kinds in found), timeout=180)
    core.delete_namespace(namespace)


def check_teacher(node_cluster, api, namespace: str, volume: Path) -> None:
    """The teacher experiment: Succeeded; its status's synthesis figures are the stage manifest's (two
    shards, one request of n=2 per question); the teacher was served (tokens generated) and is gone."""
    done = wait_for("the teacher experiment", lambda: get_experiment(api, namespace, TEACHER_EXPERIMENT),
                    lambda body: (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"), timeout=600)
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:6000]
    synthesize = next(s for s in status["stages"] if s["name"] == "synthesize")
    print(f"e2e teacher experiment: synthesize {synthesize['startTime']} -> {synthesize['finishTime']}, "
          f"experiment {status['startTime']} -> {status['finishTime']}")
    root = volume / "negrl" / namespace / TEACHER_EXPERIMENT / done["metadata"]["uid"] / "synthesize"
    manifest = json.loads((root / "manifest.json").read_text())
    written, figures = manifest["summary"], status["results"]["synthesis"]
    assert manifest["shards"] == 2 and (written["units"], written["requests"], written["generated"]) == (64, 64, 128)
    assert written["generated_tokens"] > 0  # the teacher's vLLM server answered
    assert (figures["requests"], figures["generatedTokens"], figures["costTokens"]) == (
        64, written["generated_tokens"], written["prompt_tokens"] + written["generated_tokens"])
    assert figures["acceptanceRate"] == round(written["accepted"] / 128, 4)
    assert figures["examples"] == written["dsyn_records"] == len((root / "train.jsonl").read_text().splitlines())
    assert not children(api, namespace, TEACHER_EXPERIMENT)["deployments"]  # the teacher is gone
    logs = node_cluster.kubectl("logs", f"job/{synthesize['job']}", "-n", namespace).stdout
    assert '"stage":"synthesize"' in logs, logs[-2000:]


def check_monitoring(prometheus: Prometheus, started_at: float) -> None:
    """Every dashboard query had data during the run; no alert fires after a successful one; the
    rendered rule file passes promtool."""
    time.sleep(12)  # two more scrapes of the operator after the status settled
    checked = subprocess.run(["promtool", "check", "rules", str(prometheus.rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scraped = prometheus.series_over("max by (job, endpoint) (up)", started_at, time.time())
    jobs = {(series["metric"]["job"], series["metric"]["endpoint"]) for series in scraped}
    # the operator through its Service; samplers (port http) and stage pods (port metrics) directly
    assert {("negrl-metrics", "metrics"), ("negrl-system/negrl-workloads", "http"),
            ("negrl-system/negrl-workloads", "metrics")} <= jobs, jobs
    queries = dashboard_queries()
    empty = [(board, expr) for board, expr in queries if not prometheus.series_over(expr, started_at, time.time(), 2)]
    print(f"dashboard queries: {len(queries) - len(empty)} of {len(queries)} returned data; without:",
          json.dumps(empty, indent=1))
    # The error panels stay empty in a run without errors. The rollout dashboard's panels need a
    # scrape of a sample/credit/eval pod, and this experiment's finish in a few seconds, often
    # before their first scrape (Prometheus pulls; the pod's /metrics goes with the pod): they are
    # reported above, not required. Every other panel (operator, trainer, vLLM) shows data.
    assert [(board, expr) for board, expr in empty if "errors_total" not in expr and board != "rollout"] == []
    assert all(not prometheus.series_over(expr, started_at, time.time(), 2)
               for _, expr in queries if "errors_total" in expr)
    alerts = [rule for group in yaml.safe_load(prometheus.rules.read_text())["groups"] for rule in group["rules"]]
    firing = {rule["alert"]: prometheus.api("query", query=rule["expr"])["result"] for rule in alerts}
    assert firing and not any(firing.values()), firing
