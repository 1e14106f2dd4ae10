"""The operator's writes to the API server: server-side apply of children (one field manager),
deletes, Job suspension, status patches and Events. Every request is counted."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from negrl_operator.condition import EventRecord
from negrl_operator.experiment import API_VERSION, KIND, PLURAL
from negrl_operator.manifest import Owner
from negrl_operator.observation import MANAGER
from negrl_operator.plan import Plan

PATHS = {
    "Job": ("/apis/batch/v1", "jobs"), "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"), "ConfigMap": ("/api/v1", "configmaps"),
    "Event": ("/api/v1", "events"), KIND: (f"/apis/{API_VERSION}", PLURAL),
}
APPLY, MERGE = "application/apply-patch+yaml", "application/merge-patch+json"


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = PATHS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class Kube:
    """Thin, synchronous REST calls through a kubernetes ApiClient (thread-safe connection pool)."""

    def __init__(self, api: ApiClient, on_request: Callable[[str], None] = lambda verb: None):
        self.api = api
        self.on_request = on_request

    def request(self, method: str, path: str, body=None, content_type: str | None = None,
                query: list[tuple[str, str]] | None = None) -> int:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(method, path, query_params=query or [], header_params=headers, body=body,
                                           auth_settings=["BearerToken"])
        self.on_request(method)
        response = self.api.call_api(*request)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=response.data.decode(errors="replace"),
                                             data=None)
        return response.status

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


def apply_plan(kube: Kube, owner: Owner, plan: Plan, status_changed: bool) -> None:
    """Children first, then the status (so a recorded Running stage always has its Job), then Events."""
    for manifest in plan.apply:
        kube.apply(manifest)
    for name, suspend in sorted(plan.suspend.items()):
        kube.merge_patch("Job", owner.namespace, name, {"spec": {"suspend": suspend}})
    for ref in plan.delete:
        kube.delete(ref.kind, owner.namespace, ref.name)
    if status_changed:
        status = plan.status.model_dump(mode="json", by_alias=True)
        kube.merge_patch(KIND, owner.namespace, owner.name, {"status": status}, "status")
    for event in plan.events:
        kube.post_event(owner, event)
