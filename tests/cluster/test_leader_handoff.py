"""A graceful leader hand-off on the local control plane: operator replicas as local processes
sharing one Lease. A standby that gets SIGTERM exits at once without the Lease; a leader that gets
SIGTERM stops reconciling and releases the Lease, so a standby leads within about a second, long
before the Lease's 15 s would have run out."""

from __future__ import annotations

import signal
import time

from kubernetes import client

from tests.cluster.test_lifecycle import reconciles
from tests.cluster.test_operator import SYSTEM, OperatorProcess, example, kubectl_apply
from tests.fixtures.cluster import wait_for

LEASE = "negrl-handoff-test"  # its own Lease: other modules' replicas use the release's
LEASE_DURATION_S = 15


def lease(api) -> client.V1LeaseSpec | None:
    try:
        return client.CoordinationV1Api(api).read_namespaced_lease(LEASE, SYSTEM).spec
    except client.ApiException:
        return None


def holder(api) -> str:
    spec = lease(api)
    return (spec.holder_identity or "") if spec else ""


def test_a_stopping_leader_hands_over_at_once_and_a_stopping_standby_never_leads(
        kube_cluster, api, operator_kubeconfig, namespace, tmp_path, tmp_path_factory):
    logs = tmp_path_factory.mktemp("handoff")
    election = {"NEGRL_LEADER_ELECT": "true", "NEGRL_LEASE_NAME": LEASE, "NEGRL_LEASE_NAMESPACE": SYSTEM,
                "NEGRL_LEASE_DURATION": str(LEASE_DURATION_S), "NEGRL_RECONCILE_INTERVAL": "1"}
    replicas = {name: OperatorProcess(operator_kubeconfig, logs / f"{name}.log", env={**election, "POD_NAME": name})
                for name in ("replica-a", "replica-b", "replica-c")}
    a, b, c = replicas.values()
    try:
        a.start()
        wait_for("replica-a to lead", lambda: holder(api), lambda found: found.startswith("replica-a-"))
        b.start()
        c.start()
        kubectl_apply(kube_cluster, example(namespace, "handoff"), tmp_path)
        wait_for("replica-a to reconcile", lambda: reconciles(a), lambda count: count >= 2, timeout=60)

        c.proc.send_signal(signal.SIGTERM)  # a standby told to stop: gone at once, the Lease untouched
        assert c.proc.wait(timeout=10) == 0, c.tail()
        assert "leads (Lease" not in c.log.read_text() and holder(api).startswith("replica-a-")
        assert reconciles(b) == 0  # one replica reconciles

        transitions = lease(api).lease_transitions or 0
        stopped = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=30) == 0, a.tail()
        wait_for("replica-b to lead", lambda: holder(api), lambda found: found.startswith("replica-b-"), timeout=5)
        wait_for("replica-b to reconcile", lambda: reconciles(b), lambda count: count > 0, timeout=15)
        handoff_s = time.monotonic() - stopped
        print(f"from the leader's SIGTERM to the next leader's first reconcile: {handoff_s:.1f}s")
        assert handoff_s < LEASE_DURATION_S  # released, not expired
        assert lease(api).lease_transitions == transitions + 1
        text = a.log.read_text()
        assert "SIGTERM: stopping" in text, a.tail()
        assert "released the Lease" in text, a.tail()
    finally:
        for process in replicas.values():
            process.stop()
