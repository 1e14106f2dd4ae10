"""Reads the experiments' artifact claims (spec.storage.claimName) for the StorageShared condition.

One GET per claim at most every `ttl_s` seconds, shared by every experiment naming it: reconciles are
event-driven and many, a claim's access modes rarely change, and a watch on every claim of the
cluster would bring in objects the operator does not manage. A claim the operator may not read (an
older chart's RBAC) is reported as not read (None): no condition, no error.
"""

from __future__ import annotations

import logging
import threading
import time

from kubernetes.client.exceptions import ApiException

from negrl_operator.controller.kube import Kube
from negrl_operator.reconcile.observation import ClaimState, claim_state

log = logging.getLogger("negrl.operator")
CLAIMS = "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"


class ClaimReader:
    def __init__(self, kube: Kube, ttl_s: float = 30.0, clock=time.monotonic):
        self.kube, self.ttl_s, self.clock = kube, ttl_s, clock
        self.cache: dict[tuple[str, str], tuple[float, ClaimState | None]] = {}
        self.lock = threading.Lock()
        self.forbidden_logged = False

    def read(self, namespace: str, name: str) -> ClaimState | None:
        key, now = (namespace, name), self.clock()
        with self.lock:
            cached = self.cache.get(key)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        state = self._get(namespace, name)
        with self.lock:
            self.cache[key] = (now, state)
        return state

    def _get(self, namespace: str, name: str) -> ClaimState | None:
        try:
            return claim_state(name, self.kube.get_json(CLAIMS.format(namespace=namespace, name=name)))
        except ApiException as error:
            if error.status == 404:
                return claim_state(name, None)
            if error.status == 403:
                if not self.forbidden_logged:
                    log.warning("cannot read PersistentVolumeClaims (RBAC): no StorageShared condition")
                    self.forbidden_logged = True
                return None
            raise  # mapped by the shell's handler (back-off)
