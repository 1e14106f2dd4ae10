"""Leader hand-off on the one-node cluster: how long no operator replica reconciles while the leader
is replaced, and whether any child of the running experiment is made twice.

    .venv/bin/python bench/leader.py [--lease-duration 15] [--settle 8]

Starts the node fixture (tests/fixtures/node.py; images from `make images`), installs the chart
with 2 replicas of the operator image (safety-net reconcile every second, so the leader reconciles
the experiment about once a second), applies a star-graph experiment whose SFT trains for hours on
a quarter CPU, and while that stage runs:
  upgrade   `helm upgrade` with a new pod annotation: the Deployment replaces both replicas
            (maxSurge 1, maxUnavailable 0); a stopping leader releases the Lease
  delete    `kubectl delete pod` of the leader (SIGTERM: it releases the Lease)
  kill      SIGKILL of the leader's container (no release: its restarted container, the same
            identity, or a standby once the Lease expired, leads next)
Every operator pod's /metrics is read at its pod IP (on this machine) every 0.1 s:
negrl_operator_last_reconcile_timestamp_seconds says when each replica last reconciled.
  <scenario>_leaderless_gap_s  the longest time from one replica's last reconcile to the next
                               replica's first (a replica is a container: a restart is a new one)
  overlaps                     reconciles of a replica after another one had taken over (must be 0)
  duplicates                   children of the experiment (Jobs, Deployments, Services, ConfigMaps)
                               made twice: a second uid for a name, or a second name for a Job's or
                               Deployment's component and stage, from watches over the whole run
Targets: upgrade <= 5 s, delete and kill <= the Lease duration, 0 overlaps, 0 duplicates.
The last line is name=value pairs.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # last: the repository's `operator/` must never shadow the stdlib module

from tests.e2e.test_stargraph_on_a_node import experiment_manifest  # noqa: E402
from tests.fixtures.cluster import wait_for  # noqa: E402
from tests.fixtures.node import Node, NodeCluster, start_node  # noqa: E402

RELEASE, SYSTEM, NAMESPACE, EXPERIMENT = "negrl", "negrl-system", "bench-leader", "handoff"
OPERATOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
METRIC = re.compile(r"^negrl_operator_(last_reconcile_timestamp_seconds|reconciles_total)(?:\{[^}]*\})? (\S+)$", re.M)
POLL_S = 0.1


# -- pure: hand-offs and duplicates ----------------------------------------------------------------


def handoffs(reconciles: list[tuple[float, str]]) -> tuple[list[tuple[str, str, float, float]], int]:
    """From (time, replica) reconciles: each change of the reconciling replica as (from, to, the new
    one's first reconcile time, gap), and how many reconciles came from a replica already replaced."""
    changes, replaced, overlaps = [], set(), 0
    last: tuple[float, str] | None = None
    for when, replica in sorted(reconciles):
        if replica in replaced:
            overlaps += 1
            continue
        if last is not None and replica != last[1]:
            changes.append((last[1], replica, when, when - last[0]))
            replaced.add(last[1])
        last = (when, replica)
    return changes, overlaps


def duplicates(children: set[tuple[str, str, str, str, str]]) -> list[str]:
    """From (kind, name, uid, component, stage) of every child seen: what was made twice."""
    uids, names = defaultdict(set), defaultdict(set)
    for kind, name, uid, component, stage in children:
        uids[(kind, name)].add(uid)
        if kind in ("Job", "Deployment"):
            names[(kind, component, stage)].add(name)
    return ([f"{kind}/{name} recreated" for (kind, name), found in sorted(uids.items()) if len(found) > 1]
            + [f"{kind} {component}/{stage}: {sorted(found)}" for (kind, component, stage), found in sorted(names.items())
               if len(found) > 1])


# -- observers ---------------------------------------------------------------------------------------


@dataclass
class Replicas:
    """Polls every operator pod's /metrics: when each replica (pod + container incarnation) reconciled."""

    api: client.ApiClient
    reconciles: set[tuple[float, str]] = field(default_factory=set)
    incarnation: dict[str, tuple[int, float]] = field(default_factory=dict)  # pod -> (restarts seen, last total)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        pods, refreshed = {}, 0.0
        while not self.stop.wait(POLL_S):
            if time.monotonic() - refreshed > 0.5:
                try:
                    listed = client.CoreV1Api(self.api).list_namespaced_pod(SYSTEM, label_selector=OPERATOR).items
                except Exception:  # noqa: BLE001 (re-raised unless stopping)
                    if self.stop.is_set():
                        return  # the cluster is going away
                    raise
                pods, refreshed = {p.metadata.name: p.status.pod_ip for p in listed if p.status.pod_ip}, time.monotonic()
            for name, address in pods.items():
                self.poll(name, address)

    def poll(self, pod: str, address: str) -> None:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/metrics", timeout=0.5) as reply:
                text = reply.read().decode()
        except OSError:
            return
        values = defaultdict(float)
        for name, value in METRIC.findall(text):
            values[name] += float(value)
        restarts, total = self.incarnation.get(pod, (0, 0.0))
        if values["reconciles_total"] < total:  # the counter went back: a new process in this pod
            restarts += 1
        self.incarnation[pod] = (restarts, values["reconciles_total"])
        if values["last_reconcile_timestamp_seconds"] > 0:
            self.reconciles.add((values["last_reconcile_timestamp_seconds"], f"{pod}#{restarts}"))

    def since(self, moment: float) -> set[str]:
        return {replica for when, replica in self.reconciles if when > moment}


@dataclass
class Children:
    """Watches the experiment's children; keeps (kind, name, uid, component, stage) of each one seen."""

    api: client.ApiClient
    seen: set[tuple[str, str, str, str, str]] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        core, batch, apps = client.CoreV1Api(self.api), client.BatchV1Api(self.api), client.AppsV1Api(self.api)
        for kind, lister in (("Job", batch.list_namespaced_job), ("Deployment", apps.list_namespaced_deployment),
                             ("Service", core.list_namespaced_service), ("ConfigMap", core.list_namespaced_config_map)):
            threading.Thread(target=self.follow, args=(kind, lister), daemon=True).start()

    def follow(self, kind: str, lister) -> None:
        selector = f"app.kubernetes.io/instance={EXPERIMENT}"
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(lister, NAMESPACE, label_selector=selector, timeout_seconds=5):
                    meta = event["object"].metadata
                    labels = meta.labels or {}
                    self.seen.add((kind, meta.name, meta.uid, labels.get("app.kubernetes.io/component", ""),
                                   labels.get("negrl.io/stage", "")))
            except Exception:  # noqa: BLE001 (re-raised unless stopping)
                if self.stop.is_set():
                    return  # the cluster is going away
                raise


# -- the cluster -------------------------------------------------------------------------------------


def install(cluster: NodeCluster, lease_duration: int) -> None:
    repository, tag = cluster.images["operator"].rsplit(":", 1)
    cluster.kubectl("create", "namespace", SYSTEM)
    cluster.helm("install", RELEASE, str(REPO / "charts" / "negrl"), "--namespace", SYSTEM, "--wait", "--timeout", "300s",
                 "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
                 "--set", "operator.replicas=2", "--set", "operator.reconcileInterval=1",
                 "--set", f"operator.leaderElection.leaseDurationSeconds={lease_duration}", timeout=360)


def start_experiment(cluster: NodeCluster, api, workdir: Path) -> None:
    """The star-graph experiment with one SFT pod that trains far longer than this benchmark runs."""
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    cluster.claim(api, NAMESPACE, "negrl-data")
    doc = experiment_manifest(NAMESPACE, EXPERIMENT, cluster.images)
    doc["spec"]["trainer"].update(nodes=1, resources={"requests": {"cpu": "100m", "memory": "256Mi"},
                                                      "limits": {"cpu": "250m"}})
    doc["spec"]["stages"]["sft"]["params"]["minSteps"] = 1_000_000
    path = workdir / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    cluster.kubectl("apply", "-f", str(path))

    def sft_state(body: dict) -> str:
        return next((s["state"] for s in (body.get("status") or {}).get("stages", []) if s["name"] == "sft"), "")

    wait_for("the SFT stage to run", lambda: client.CustomObjectsApi(api).get_namespaced_custom_object(
        "negrl.io", "v1alpha1", NAMESPACE, "negrlexperiments", EXPERIMENT), lambda body: sft_state(body) == "Running",
        timeout=900)


def leader_pod(api) -> str:
    holder = client.CoordinationV1Api(api).read_namespaced_lease(RELEASE, SYSTEM).spec.holder_identity
    return holder.rsplit("-", 1)[0]  # identity: <pod name>-<pid>


def settled(api, replicas: Replicas, started: float, old: set[str]) -> bool:
    """A replica that did not lead before reconciles, and the Deployment has 2 ready, updated replicas."""
    deployment = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, SYSTEM)
    status = deployment.status
    rolled = (status.updated_replicas, status.ready_replicas, status.replicas) == (2, 2, 2)
    return rolled and bool(replicas.since(started) - old)


def scenario(name: str, api, replicas: Replicas, act, settle_s: float) -> tuple[float, int]:
    """Run `act`, wait until another replica leads and the Deployment is whole; (largest gap, hand-offs)."""
    time.sleep(settle_s)
    started = time.time()
    old = replicas.since(started - 2)  # the leader now
    act()
    wait_for(f"{name}: a new leader", lambda: settled(api, replicas, started, old), bool, timeout=300)
    time.sleep(settle_s)
    window = [(when, replica) for when, replica in replicas.reconciles if when > started - 5]
    changes, _ = handoffs(window)
    changes = [change for change in changes if change[2] > started]
    for before, after, _, gap in changes:
        print(f"{name}: {before} -> {after}: leaderless {gap:.2f}s", flush=True)
    if not changes:
        raise AssertionError(f"{name}: no hand-off seen; reconciles since: {sorted(window)[-10:]}")
    return max(gap for *_, gap in changes), len(changes)


def kill_container(node: Node, api, pod: str) -> None:
    status = client.CoreV1Api(api).read_namespaced_pod(pod, SYSTEM).status.container_statuses[0]
    node._ctr("tasks", "kill", "-s", "SIGKILL", status.container_id.split("://", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lease-duration", type=int, default=15, help="the chart's leaseDurationSeconds")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds of steady leading before and after each step")
    args = parser.parse_args()
    node, cluster = start_node(("operator", "worker", "sampler-cpu"))  # the manifest names all three
    replicas = children = None
    try:
        with cluster.api_client() as api:
            install(cluster, args.lease_duration)
            replicas, children = Replicas(api), Children(api)
            threading.Thread(target=replicas.run, daemon=True).start()
            children.start()
            start_experiment(cluster, api, node.workdir)
            figures: dict[str, float] = {}
            steps = {
                "upgrade": lambda: cluster.helm(
                    "upgrade", RELEASE, str(REPO / "charts" / "negrl"), "--namespace", SYSTEM, "--reuse-values",
                    "--set-string", f"podAnnotations.bench-roll={time.time():.0f}", "--wait", "--timeout", "300s",
                    timeout=360),
                "delete": lambda: cluster.kubectl("delete", "pod", leader_pod(api), "-n", SYSTEM, "--wait=false"),
                "kill": lambda: kill_container(node, api, leader_pod(api)),
            }
            total = 0
            for name, act in steps.items():
                figures[f"{name}_leaderless_gap_s"], count = scenario(name, api, replicas, act, args.settle)
                total += count
            _, overlaps = handoffs(sorted(replicas.reconciles))
            made_twice = duplicates(children.seen)
            lease = client.CoordinationV1Api(api).read_namespaced_lease(RELEASE, SYSTEM).spec
            print(f"children seen: {len({(k, n) for k, n, *_ in children.seen})}; made twice: {made_twice}; "
                  f"Lease transitions {lease.lease_transitions}, holder {lease.holder_identity}", flush=True)
    finally:
        for observer in (replicas, children):
            if observer is not None:
                observer.stop.set()
        left = node.stop()
    assert not left, left
    print(" ".join(f"{name}={value:.1f}" for name, value in figures.items())
          + f" handoffs={total} overlaps={overlaps} duplicates={len(made_twice)} lease_duration_s={args.lease_duration}")


if __name__ == "__main__":
    main()
