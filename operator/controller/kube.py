"""The operator's writes to the API server: server-side apply of children (one field manager),
deletes, Job suspension, status patches and Events. Every request is counted."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from negrl_operator.api.experiment import API_VERSION, KIND, PLURAL
from negrl_operator.reconcile.condition import EventRecord
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import MANAGER
from negrl_operator.reconcile.plan import Plan

PATHS = {
    "Job": ("/apis/batch/v1", "jobs"), "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"), "ConfigMap": ("/api/v1", "configmaps"),
    "Event": ("/api/v1", "events"), KIND: (f"/apis/{API_VERSION}", PLURAL),
    "JobSet": ("/apis/jobset.x-k8s.io/v1alpha2", "jobsets"),
}
APPLY, MERGE = "application/apply-patch+yaml", "application/merge-patch+json"
WORKLOADS = "/apis/kueue.x-k8s.io/v1beta2/namespaces/{namespace}/workloads"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue labels each Workload with its Job's uid


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = PATHS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


log = logging.getLogger("negrl.operator")


class Kube:
    """Thin, synchronous REST calls through a kubernetes ApiClient (thread-safe connection pool).
    `on_request(verb, seconds)` sees every request."""

    def __init__(self, api: ApiClient, on_request: Callable[[str, float], None] = lambda verb, seconds: None,
                 parallel: int = 32):
        self.api = api
        self.on_request = on_request
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="apply")

    def request(self, method: str, path: str, body=None, content_type: str | None = None,
                query: list[tuple[str, str]] | None = None) -> int:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(method, path, query_params=query or [], header_params=headers, body=body,
                                           auth_settings=["BearerToken"])
        started = time.perf_counter()
        try:
            response = self.api.call_api(*request)
            response.read()
        finally:
            self.on_request(method, time.perf_counter() - started)
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=response.data.decode(errors="replace"),
                                             data=None)
        return response.status

    def get_json(self, path: str, query: list[tuple[str, str]] | None = None) -> dict:
        request = self.api.param_serialize("GET", path, query_params=query or [],
                                           header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        started = time.perf_counter()
        try:
            response = self.api.call_api(*request)
            response.read()
        finally:
            self.on_request("GET", time.perf_counter() - started)
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=response.data.decode(errors="replace"),
                                             data=None)
        return json.loads(response.data)

    def set_workload_active(self, namespace: str, job_uid: str, active: bool) -> None:
        """Kueue's way to stop (evict and suspend) or resume a Job it manages: Workload spec.active."""
        path = WORKLOADS.format(namespace=namespace)
        found = self.get_json(path, [("labelSelector", f"{JOB_UID_LABEL}={job_uid}")])
        for workload in found.get("items", []):
            if (workload.get("spec") or {}).get("active", True) != active:
                self.request("PATCH", f"{path}/{workload['metadata']['name']}", {"spec": {"active": active}}, MERGE)

    def apply(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        path = object_path(manifest["kind"], meta["namespace"], meta["name"])
        self.request("PATCH", path, manifest, APPLY, [("fieldManager", MANAGER), ("force", "true")])

    def delete(self, kind: str, namespace: str, name: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", object_path(kind, namespace, name), body)
        except ApiException as error:
            if error.status != 404:
                raise

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict, subresource: str = "") -> None:
        path = object_path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        self.request("PATCH", path, patch, MERGE, [("fieldManager", MANAGER)])

    def post_event(self, owner: Owner, event: EventRecord, now: datetime | None = None) -> None:
        moment = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{owner.name}.{uuid.uuid4().hex[:12]}", "namespace": owner.namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name,
                               "namespace": owner.namespace, "uid": owner.uid},
            "type": event.type, "reason": event.reason, "message": event.message[:1024],
            "source": {"component": MANAGER}, "reportingComponent": MANAGER, "reportingInstance": MANAGER,
            "firstTimestamp": moment, "lastTimestamp": moment, "count": 1,
        }
        self.request("POST", object_path("Event", owner.namespace), body)


class EventPoster:
    """Posts Events from a background thread: they are reports, so a reconcile never waits on them."""

    def __init__(self, kube: Kube, capacity: int = 10000):
        self.kube = kube
        self.queue: queue.Queue = queue.Queue(capacity)
        threading.Thread(target=self._run, name="events", daemon=True).start()

    def post(self, owner: Owner, event: EventRecord) -> None:
        try:
            self.queue.put_nowait((owner, event, datetime.now(UTC)))
        except queue.Full:
            log.warning("event queue full, dropped: %s %s", event.reason, event.message)

    def _run(self) -> None:
        while True:
            owner, event, moment = self.queue.get()
            try:
                self.kube.post_event(owner, event, moment)
            except Exception as error:  # noqa: BLE001 (an Event lost is logged, never fatal)
                log.warning("could not post event %s for %s/%s: %s", event.reason, owner.namespace, owner.name, error)


def apply_plan(kube: Kube, owner: Owner, plan: Plan, status_changed: bool, events: EventPoster | None = None,
               ordered: bool = False) -> None:
    """Every write of the plan at once: a reconcile costs one round trip, not one per child. The order
    does not matter to correctness: a status that records a stage as Running whose Job could not be
    created makes the next plan create it again. `ordered` (after a refused write) writes the status
    only once the children were accepted, so a child refused again leaves the reported refusal in
    place. Events go to the poster (inline without one)."""
    calls = [lambda m=manifest: kube.apply(m) for manifest in plan.apply]
    calls += [lambda n=name, s=suspend: kube.merge_patch("Job", owner.namespace, n, {"spec": {"suspend": s}})
              for name, suspend in sorted(plan.suspend.items())]
    calls += [lambda n=name, s=suspend: kube.merge_patch("JobSet", owner.namespace, n, {"spec": {"suspend": s}})
              for name, suspend in sorted(plan.suspend_jobsets.items())]
    calls += [lambda u=uid, a=active: kube.set_workload_active(owner.namespace, u, a)
              for uid, active in sorted(plan.workloads_active.items())]
    calls += [lambda r=ref: kube.delete(r.kind, owner.namespace, r.name) for ref in plan.delete]
    status = [lambda: kube.merge_patch(KIND, owner.namespace, owner.name,
                                       {"status": plan.status.model_dump(mode="json", by_alias=True)}, "status")]
    status = status if status_changed else []
    if ordered:
        _all(kube, calls)
        _all(kube, status)
    else:
        _all(kube, calls + status)
    for event in plan.events:
        if events is not None:
            events.post(owner, event)
        else:
            kube.post_event(owner, event)


def _all(kube: Kube, calls: list) -> None:
    """Run the calls in parallel; once every call has finished, the first error propagates. Waiting
    for all matters: a status write still in flight when a refused child's error reached the caller
    could land after the caller reported the refusal, and erase it."""
    if len(calls) == 1:
        calls[0]()
        return
    futures = [kube.pool.submit(call) for call in calls]
    wait(futures)
    for future in futures:
        future.result()
