"""Which training process leads and which serves /metrics, from torchrun's environment: every pod
serves the port its template declares (local rank 0), exactly one process per pod binds it."""

import pytest

from negrl_trainer.rank import RankRole, rank_role

pytestmark = pytest.mark.unit

PORT = 9400


@pytest.mark.parametrize(("env", "port", "expected"), [
    pytest.param({}, PORT, RankRole(True, True, "0"), id="plain-process"),
    pytest.param({}, None, RankRole(True, False, "0"), id="plain-no-port"),
    pytest.param({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}, PORT, RankRole(True, True, "0"), id="rank-0"),
    pytest.param({"RANK": "1", "LOCAL_RANK": "1", "GROUP_RANK": "0"}, PORT, RankRole(False, False, "0"),
                 id="pod-0-second-gpu"),
    pytest.param({"RANK": "8", "LOCAL_RANK": "0", "GROUP_RANK": "1"}, PORT, RankRole(False, True, "1"),
                 id="pod-1-first-gpu"),
    pytest.param({"RANK": "15", "LOCAL_RANK": "7", "GROUP_RANK": "1"}, PORT, RankRole(False, False, "1"),
                 id="pod-1-last-gpu"),
    pytest.param({"RANK": "8", "LOCAL_RANK": "0", "GROUP_RANK": "1"}, 0, RankRole(False, False, "1"),
                 id="port-zero-serves-nothing"),
])
def test_rank_role(env, port, expected):
    assert rank_role(env, port) == expected


def test_one_server_per_pod_and_one_leader():
    """2 pods x 4 GPUs: the pod's local rank 0 serves (one per pod, never two in a pod), one leader."""
    envs = [{"RANK": str(4 * pod + local), "LOCAL_RANK": str(local), "GROUP_RANK": str(pod)}
            for pod in range(2) for local in range(4)]
    roles = [rank_role(env, PORT) for env in envs]
    assert [role.node_rank for role in roles if role.serves_metrics] == ["0", "1"]
    assert [env["RANK"] for env, role in zip(envs, roles, strict=True) if role.leader] == ["0"]
