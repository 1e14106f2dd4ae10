"""The chart's rollout settings fit the graceful leader hand-off: one new replica up before an old
one stops, a grace period longer than the operator's drain plus the Lease release, and the
operator told how long it may drain."""

from __future__ import annotations

import pytest

from tests.unit.test_chart import CHART, by_kind, helm, render


def operator_pod(*sets: str) -> tuple[dict, dict]:
    (deployment,) = by_kind(render(*sets), "Deployment")
    return deployment["spec"], deployment["spec"]["template"]["spec"]


def argument(container: dict, flag: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in container["args"] if arg.startswith(f"{flag}=")]
    return value


def test_with_leader_election_a_rollout_surges_one_replica_and_never_goes_below_the_replicas():
    spec, pod = operator_pod()
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    (container,) = pod["containers"]
    # a standby is Ready (it serves /healthz while it waits), so the surge replica can replace an old one
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NEGRL_LEADER_ELECT"] == "true"


@pytest.mark.parametrize(("grace", "drain"), [(None, "20"), ("15", "5"), ("120", "110")])
def test_the_grace_period_leaves_ten_seconds_after_the_drain_for_the_release(grace, drain):
    _, pod = operator_pod(*([f"operator.terminationGracePeriodSeconds={grace}"] if grace else []))
    assert pod["terminationGracePeriodSeconds"] == int(grace or 30)
    assert argument(pod["containers"][0], "--shutdown-timeout") == drain


def test_without_leader_election_the_single_replica_is_recreated_and_keeps_its_grace_period():
    spec, pod = operator_pod("operator.replicas=1", "operator.leaderElection.enabled=false")
    assert spec["strategy"] == {"type": "Recreate"}
    assert pod["terminationGracePeriodSeconds"] == 30


@pytest.mark.parametrize("bad", ["operator.terminationGracePeriodSeconds=14",
                                 "operator.terminationGracePeriodSeconds=3601",
                                 "operator.leaderElection.leaseDurationSeconds=2"])
def test_rollout_values_out_of_range_are_refused(bad):
    refused = helm("template", "rel", str(CHART), "--set", bad, check=False)
    assert refused.returncode != 0
    assert bad.split("=")[0].rsplit(".", 1)[1] in refused.stderr
