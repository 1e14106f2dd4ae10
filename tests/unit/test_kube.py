"""How the operator's thin Kubernetes shell sends a plan's writes (operator/controller/kube.py)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes.client.exceptions import ApiException

from negrl_operator.controller.kube import apply_plan
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.plan import Plan

OWNER = Owner("refused", "ns", "uid-1")


class SlowStatusKube:
    """The child is refused at once; the status write takes a while to land."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(4)
        self.status_landed = threading.Event()

    def apply(self, manifest: dict) -> None:
        raise ApiException(status=422, reason="Unprocessable Entity")

    def merge_patch(self, kind: str, namespace: str, name: str, body: dict, subresource: str | None = None) -> None:
        time.sleep(0.3)
        self.status_landed.set()


def test_a_refused_child_surfaces_only_after_the_status_write_has_landed():
    """Else the caller's report of the refusal could be overwritten by that late status write."""
    kube = SlowStatusKube()
    with pytest.raises(ApiException) as refused:
        apply_plan(kube, OWNER, Plan(apply=[{"kind": "Job"}]), status_changed=True)
    assert refused.value.status == 422
    assert kube.status_landed.is_set()


def test_after_a_refusal_the_status_is_not_written_while_a_child_is_still_refused():
    kube = SlowStatusKube()
    with pytest.raises(ApiException):
        apply_plan(kube, OWNER, Plan(apply=[{"kind": "Job"}]), status_changed=True, ordered=True)
    time.sleep(0.4)
    assert not kube.status_landed.is_set()
