"""Operator benchmark on the local control plane: 100 experiments applied at once.

    .venv/bin/python bench/operator.py [--experiments 100] [--interval 10] [--observe 40]

Starts the local control plane (tests/fixtures/cluster.py; or NEGRL_TEST_KUBECONFIG's cluster),
installs the chart, runs `negrl operator` as a local process with the chart's ServiceAccount token,
then `kubectl apply`s N copies of examples/gsm8k.yaml in one go. It reports:
  all_planned_s           time until every experiment has its first stage's children (ConfigMap + Job)
  reconcile_p50/p95_ms    reconcile latency, from the operator's histogram (linear within buckets),
                          over the creation burst and `--observe` seconds of event-driven reconciles
                          after it (by trigger: create, child event, requeue)
  requests_per_reconcile  API requests the operator made (its own and kopf's) per reconcile
  rss_mb / rss_peak_mb    the operator process's resident memory at the end / at its peak
  handoff_p95_s           from a Job's completion (or, for a stage that samples, its sampler's first
                          ready replica if that came later) to the creation of the experiment's next
                          Job, as a watch of this script sees them (kwok ends pods at once and writes
                          a summary)
  rss_mb_noise            growth of the operator's RSS while `--noise` unrelated Pods and ConfigMaps
                          are created in another namespace (its experiments still run meanwhile)
  foreign_events          watch events of objects it does not manage that reached the operator during
                          that noise (server-side selectors: 0)
Targets: all 100 within 60 s, p95 < 250 ms, RSS < 250 MB, handoff p95 <= 2 s. The last line is
`name=value` pairs.

With --kueue, Kueue's manager and the JobSet controller (tools/kueue/build.sh) run too, the example
keeps its queue names (LocalQueues team-a-gpu and team-a-cpu with room for every experiment), so
every Job is created suspended and goes through Kueue's admission.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from kubernetes import watch
from kubernetes.client import AppsV1Api, BatchV1Api

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.cluster import ControlPlane, KubeCluster, free_port, locate_binaries, tool_env  # noqa: E402
from tests.fixtures.kueue import start_batch_controllers  # noqa: E402

SYSTEM, RELEASE = "negrl-system", "negrl"
NAMESPACE = f"bench-{os.getpid()}"


def start_cluster(workdir: Path) -> tuple[KubeCluster, ControlPlane | None]:
    existing = os.environ.get("NEGRL_TEST_KUBECONFIG")
    if existing:
        path = Path(existing)
        server = yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"]
        return KubeCluster(kubeconfig=path, server=server, env=tool_env(path, workdir)), None
    plane = ControlPlane(locate_binaries(), workdir)
    return plane.start(), plane


def operator_kubeconfig(cluster: KubeCluster, workdir: Path) -> Path:
    token = cluster.kubectl("create", "token", RELEASE, "-n", SYSTEM, "--duration", "2h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path = workdir / "operator.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [admin["clusters"][0]],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"}}],
        "current-context": "operator",
    }))
    return path


def storage(cluster: KubeCluster, workdir: Path) -> None:
    volume = {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{NAMESPACE}-data"},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "hostPath": {"path": "/tmp/bench"}, "claimRef": {"namespace": NAMESPACE, "name": "negrl-data"}},
    }
    claim = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "negrl-data", "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"{NAMESPACE}-data",
                 "resources": {"requests": {"storage": "1Ti"}}},
    }
    path = workdir / "storage.yaml"
    path.write_text(yaml.safe_dump_all([volume, claim]))
    cluster.kubectl("apply", "-f", str(path))


SUMMARY = json.dumps({"stage": "bench", "samples": 8, "pass_at_1": 0.3})  # every stage pod's termination message


def queues(cluster: KubeCluster, workdir: Path, names: list[str], experiments: int) -> None:
    """LocalQueues `names` in the bench namespace, on ClusterQueues with room for every experiment."""
    docs = [{"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "bench"}}]
    for name in names:
        docs.append({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name},
                     "spec": {"namespaceSelector": {}, "resourceGroups": [{
                         "coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [{"name": "bench", "resources": [
                             {"name": "cpu", "nominalQuota": 64 * experiments},
                             {"name": "memory", "nominalQuota": f"{512 * experiments}Gi"},
                             {"name": "nvidia.com/gpu", "nominalQuota": 16 * experiments}]}]}]}})
        docs.append({"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                     "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"clusterQueue": name}})
    path = workdir / "queues.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cluster.kubectl("apply", "-f", str(path))


def experiments(count: int, workdir: Path, kueue: bool = False) -> Path:
    template = yaml.safe_load((ROOT / "examples" / "gsm8k.yaml").read_text())
    annotations = {"kwok.negrl.io/termination-message": SUMMARY}  # kwok writes it, as a kubelet would
    scheduling = template["spec"].pop("scheduling", {})
    template["spec"]["scheduling"] = {"worker": {"podAnnotations": annotations},
                                      "trainer": {"podAnnotations": annotations}}
    if kueue:  # queue names only: kwok's nodes have no GPU-product label
        for component, placement in scheduling.items():
            if placement.get("queueName"):
                template["spec"]["scheduling"].setdefault(component, {})["queueName"] = placement["queueName"]
    docs = []
    for index in range(count):
        doc = yaml.safe_load(yaml.safe_dump(template))
        doc["metadata"] = {"name": f"bench-{index:03d}", "namespace": NAMESPACE}
        docs.append(doc)
    path = workdir / "experiments.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def planned(cluster: KubeCluster, count: int) -> int:
    """Experiments whose first stage (prepare) has both its ConfigMap and its Job."""
    names = {}
    for kind in ("jobs", "configmaps"):
        out = cluster.kubectl("get", kind, "-n", NAMESPACE, "-l", "negrl.io/stage=prepare", "-o", "name").stdout
        names[kind] = {line.split("/")[-1].split("-")[1] for line in out.split()}
    return len(names["jobs"] & names["configmaps"])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def series(text: str, name: str) -> list[tuple[dict, float]]:
    found = []
    for match in re.finditer(rf"^{name}(?:{{(.*?)}})? (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        found.append((labels, float(match.group(2))))
    return found


def quantile(text: str, q: float, name: str = "negrl_operator_reconcile_duration_seconds_bucket",
             keep=lambda labels: True) -> float:
    """histogram_quantile over the series of histogram `name` that `keep` selects, summed."""
    buckets: dict[float, float] = {}
    for labels, value in series(text, name):
        if not keep(labels):
            continue
        bound = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    bounds = sorted(buckets)
    if not bounds or not buckets[bounds[-1]]:
        return float("nan")  # no such observation
    total = buckets[bounds[-1]]
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(buckets[bound] - below, 1e-9)
        lower, below = bound, buckets[bound]
    return lower


class JobClock:
    """Watches the bench namespace's Jobs and sampler Deployments: when each Job appeared and completed,
    when each Deployment first had a ready replica."""

    def __init__(self, cluster: KubeCluster):
        self.api = cluster_api(cluster)
        self.created: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        threading.Thread(target=self._jobs, daemon=True).start()
        threading.Thread(target=self._deployments, daemon=True).start()

    def _jobs(self) -> None:
        for job, now in self._stream(BatchV1Api(self.api).list_namespaced_job):
            self.created.setdefault(job.metadata.name, now)
            if any(c.type == "Complete" and c.status == "True" for c in (job.status.conditions or [])):
                self.completed.setdefault(job.metadata.name, now)

    def _deployments(self) -> None:
        for deployment, now in self._stream(AppsV1Api(self.api).list_namespaced_deployment):
            if deployment.status and deployment.status.ready_replicas:
                self.ready.setdefault(deployment.metadata.name, now)

    def _stream(self, lister):
        try:
            for event in watch.Watch().stream(lister, NAMESPACE, timeout_seconds=3600):
                yield event["object"], time.monotonic()
        except Exception:  # noqa: BLE001 (the control plane stops at the end of the bench)
            return

    def handoffs(self) -> list[float]:
        """For each Job created after one of its experiment's Jobs completed: the time from the moment all
        it needed was there (that completion, or its sampler's first ready replica if later) to its creation."""
        found = []
        for name, created in self.created.items():
            experiment = name.split("-")[1]  # bench-<index>-<component>-<stage>
            mine = [t for job, t in self.completed.items() if job.split("-")[1] == experiment and t <= created]
            if mine:
                samplers = [t for d, t in self.ready.items() if d.split("-")[1] == experiment and t <= created]
                found.append(created - max(mine + samplers))
        return found


def cluster_api(cluster: KubeCluster):
    from kubernetes import config

    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


def noise(cluster: KubeCluster, count: int, workdir: Path) -> None:
    """`count` Pods and ConfigMaps (half each) that have nothing to do with the operator."""
    namespace = f"{NAMESPACE}-noise"
    cluster.kubectl("create", "namespace", namespace)
    docs = []
    for index in range(count // 2):
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"noise-{index}",
                     "namespace": namespace, "labels": {"app": "noise"}}, "data": {"blob": "x" * 512}})
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"noise-{index}", "namespace": namespace,
                     "labels": {"app": "noise"}},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}], "tolerations": [{"operator": "Exists"}],
                              "nodeSelector": {"type": "kwok"}}})
    path = workdir / "noise.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cluster.kubectl("apply", "--server-side", "-f", str(path), timeout=600)


def quantile_of(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    cluster, plane = start_cluster(workdir)
    controllers = {}
    try:
        if args.kueue:
            controllers = start_batch_controllers(cluster, workdir)
        cluster.kubectl("create", "namespace", SYSTEM, check=False)  # an existing cluster may have it
        cluster.kubectl("create", "namespace", NAMESPACE)
        # One (kwok) replica of the chart's operator: its 100m leaves a node's 32 CPUs to a trainer pod.
        cluster.helm("upgrade", "--install", RELEASE, str(ROOT / "charts" / "negrl"), "-n", SYSTEM,
                     "--set", "operator.replicas=1", timeout=180)
        storage(cluster, workdir)
        if args.kueue:
            queues(cluster, workdir, ["team-a-gpu", "team-a-cpu"], args.experiments)
        port = free_port()
        env = {**os.environ, "KUBECONFIG": str(operator_kubeconfig(cluster, workdir))}
        with (workdir / "operator.log").open("w") as log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "negrl_operator.cli", "operator", "--port", str(port), "--interval",
                 str(args.interval)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            return measure(args, cluster, operator, port, workdir)
        finally:
            operator.terminate()
            operator.wait(timeout=20)
    finally:
        for controller in controllers.values():
            controller.stop()
        if plane is not None:
            plane.stop()


def measure(args, cluster: KubeCluster, operator: subprocess.Popen, port: int, workdir: Path) -> dict[str, float]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if "negrl_operator_reconciles" in scrape(port):
                break
        except OSError:
            time.sleep(0.2)
    time.sleep(2)  # kopf's watches and indices are up
    clock = JobClock(cluster)
    manifests = experiments(args.experiments, workdir, args.kueue)
    started = time.monotonic()
    apply = subprocess.Popen(["kubectl", "apply", "--server-side", "-f", str(manifests)], env=cluster.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first, applied_s = None, None
    while (done := planned(cluster, args.experiments)) < args.experiments:
        if done and first is None:
            first = time.monotonic() - started
        if applied_s is None and apply.poll() is not None:
            applied_s = time.monotonic() - started
            if apply.returncode != 0:
                raise SystemExit(f"kubectl apply failed: {apply.stderr.read()}")
        if time.monotonic() - started > args.limit:
            raise SystemExit(f"only {done}/{args.experiments} experiments planned after {args.limit}s")
        time.sleep(0.2)
    all_planned = time.monotonic() - started
    apply.wait()
    applied_s = applied_s or all_planned
    print(f"applied {args.experiments} experiments in {applied_s:.1f}s; all planned after {all_planned:.1f}s",
          flush=True)
    time.sleep(args.observe)  # periodic reconciles, stage completions (kwok), the next stages
    text = scrape(port)
    server = cluster.kubectl("get", "--raw", "/metrics").stdout
    writes = {"POST", "PATCH", "APPLY", "PUT", "DELETE"}

    def operator_write(labels: dict) -> bool:  # the API server's own time for the operator's kinds of writes
        return labels.get("verb") in writes and labels.get("resource") in {
            "jobs", "configmaps", "negrlexperiments", "deployments", "services"}
    reconciles = sum(value for _, value in series(text, "negrl_operator_reconciles_total"))
    requests = sum(value for _, value in series(text, "negrl_operator_api_requests_total"))
    errors = sum(value for _, value in series(text, "negrl_operator_reconcile_errors_total"))
    rss, peak = rss_mb(operator.pid)
    handoff = quantile_of(clock.handoffs(), 0.95)
    handoffs = len(clock.handoffs())
    received = sum(value for _, value in series(text, "negrl_operator_foreign_watch_events_total"))
    noise(cluster, args.noise, workdir)
    time.sleep(10)  # kwok runs the noise pods: each gets scheduled, started, marked ready
    after = scrape(port)
    foreign = sum(value for _, value in series(after, "negrl_operator_foreign_watch_events_total")) - received
    rss_noise = rss_mb(operator.pid)[0] - rss
    cpu = sum(int(v) for v in Path(f"/proc/{operator.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)", flush=True)
    return {
        "experiments": args.experiments, "all_planned_s": round(all_planned, 2),
        "first_planned_s": round(first or all_planned, 2), "apply_s": round(applied_s, 2),
        "reconciles": int(reconciles), "reconcile_errors": int(errors),
        "reconcile_p50_ms": round(1000 * quantile(text, 0.5), 1), "reconcile_p95_ms": round(1000 * quantile(text, 0.95), 1),
        "reconcile_create_p95_ms": round(1000 * quantile(text, 0.95, keep=lambda lb: lb["trigger"] == "create"), 1),
        "reconcile_child_p95_ms": round(1000 * quantile(text, 0.95, keep=lambda lb: lb["trigger"] == "child"), 1),
        "reconcile_requeue_p95_ms": round(1000 * quantile(text, 0.95, keep=lambda lb: lb["trigger"] == "requeue"), 1),
        "requests_per_reconcile": round(requests / max(reconciles, 1), 2),
        "api_write_p95_ms": round(1000 * quantile(text, 0.95, "negrl_operator_api_request_duration_seconds_bucket",
                                                  lambda labels: labels["verb"] != "GET"), 1),
        "apiserver_write_p95_ms": round(1000 * quantile(server, 0.95, "apiserver_request_duration_seconds_bucket",
                                                        operator_write), 1),
        "rss_mb": round(rss, 1),
        "rss_peak_mb": round(peak, 1), "operator_cpu_s": round(cpu / os.sysconf("SC_CLK_TCK"), 1),
        "handoffs": handoffs, "handoff_p95_s": round(handoff, 2), "noise_objects": args.noise,
        "rss_mb_noise": round(rss_noise, 1), "foreign_events": int(foreign),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--interval", type=float, default=300.0, help="operator safety-net reconcile interval (s)")
    parser.add_argument("--noise", type=int, default=2000, help="unrelated Pods + ConfigMaps created at the end")
    parser.add_argument("--observe", type=float, default=40.0, help="seconds of steady state after the burst")
    parser.add_argument("--limit", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--kueue", action="store_true", help="run Kueue and JobSet; Jobs go through Kueue")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="negrl-bench-operator-"))
    try:
        figures = run(args, workdir)
    finally:
        shutil.rmtree(workdir / "etcd", ignore_errors=True)  # the control plane's data; logs stay
        print(f"(operator log: {workdir / 'operator.log'})")
    targets = {"all_planned_s": 60, "reconcile_p95_ms": 250, "rss_peak_mb": 250, "handoff_p95_s": 2.0001}
    for name, limit in targets.items():
        print(f"{name}: {figures[name]} (target < {limit}) {'ok' if figures[name] < limit else 'MISSED'}")
    print(" ".join(f"{name}={value}" for name, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
