"""What the operator watches and how each watch event reaches the work queue.

kopf indices hold the children (Jobs, Deployments, Services, ConfigMaps, Pods) and the Jobs'
FailedCreate Events; the API server filters every one of these watches (a label selector, a field
selector for Events), so unrelated objects never reach the operator. An experiment's event stores
its latest body and queues it when it is new or its generation changed; a child's event queues its
experiment. No handler here needs a finalizer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import aiohttp
import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from negrl_operator.api.experiment import GROUP, KIND, PLURAL, VERSION, ExperimentSpec
from negrl_operator.controller.kube import Kube
from negrl_operator.reconcile.cleanup import cleanup_job
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import (
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    child_state,
    deployment_state,
    failed_create,
    job_state,
    jobset_state,
    pod_report,
)

if TYPE_CHECKING:
    from negrl_operator.controller.shell import Runtime

log = logging.getLogger("negrl.operator")
MANAGED = {MANAGED_BY_LABEL: MANAGER}


def _key(namespace: str | None, labels) -> tuple[str | None, str | None]:
    return namespace, labels.get(INSTANCE_LABEL)


def register_indices(registry: kopf.OperatorRegistry) -> None:
    @kopf.index("batch", "v1", "jobs", labels=MANAGED, registry=registry, id="negrl_jobs")
    def negrl_jobs(namespace, labels, body, **_):
        return {_key(namespace, labels): job_state(body)}

    @kopf.index("jobset.x-k8s.io", "v1alpha2", "jobsets", labels=MANAGED, registry=registry, id="negrl_jobsets")
    def negrl_jobsets(namespace, labels, body, **_):
        return {_key(namespace, labels): jobset_state(body)}

    @kopf.index("apps", "v1", "deployments", labels=MANAGED, registry=registry, id="negrl_deployments")
    def negrl_deployments(namespace, labels, body, **_):
        return {_key(namespace, labels): deployment_state(body)}

    @kopf.index("v1", "services", labels=MANAGED, registry=registry, id="negrl_services")
    def negrl_services(namespace, labels, body, **_):
        return {_key(namespace, labels): child_state({**body, "kind": "Service"})}

    @kopf.index("v1", "configmaps", labels=MANAGED, registry=registry, id="negrl_configmaps")
    def negrl_configmaps(namespace, labels, body, **_):
        return {_key(namespace, labels): child_state({**body, "kind": "ConfigMap"})}

    @kopf.index("v1", "pods", labels=MANAGED, registry=registry, id="negrl_pods")
    def negrl_pods(namespace, labels, body, **_):
        return {_key(namespace, labels): pod_report(body)}

    @kopf.index("v1", "events", registry=registry, id="negrl_job_events")
    def negrl_job_events(namespace, body, **_):
        problem = failed_create(body)
        involved = body.get("involvedObject") or {}
        return {(namespace, involved.get("name")): problem} if problem and involved.get("kind") == "Job" else None


class _Merged:
    """Several indices read as one (Services and ConfigMaps; Jobs and JobSets)."""

    def __init__(self, *indices):
        self.indices = indices

    def get(self, key, default=()):
        return [value for index in self.indices for value in index.get(key, [])]


def counting_login(on_request=None):
    """kopf's login through the kubernetes client's config, with an HTTP session that counts and
    times every request kopf makes (watches, its own patches)."""

    async def login(**kwargs):
        info = kopf.login_via_client(**kwargs)
        trace = aiohttp.TraceConfig()

        async def start(session, context, params):
            context.started = time.perf_counter()

        async def end(session, context, params):
            if on_request:
                on_request(params.method, time.perf_counter() - context.started)

        trace.on_request_start.append(start)
        trace.on_request_end.append(end)
        trace.on_request_exception.append(end)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()), headers=info.as_http_headers(),
            trace_configs=[trace],
        )
        return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace,
                                   aiohttp_session=session)

    return login


# Server-side filters: the API server sends only our children (and Jobs' FailedCreate Events), so
# unrelated Pods, ConfigMaps and Events of the watched namespaces never reach the operator.
CHILD_RESOURCES = (("batch", "v1", "jobs"), ("apps", "v1", "deployments"), ("v1", "services"),
                   ("v1", "configmaps"), ("v1", "pods"), ("jobset.x-k8s.io", "v1alpha2", "jobsets"))
EVENT_SELECTOR = "involvedObject.kind=Job,reason=FailedCreate"


def configure_watches(settings: kopf.OperatorSettings) -> None:
    selector = f"{MANAGED_BY_LABEL}={MANAGER}"
    for resource in CHILD_RESOURCES:
        settings.watching.label_selectors[resource] = selector
    settings.watching.field_selectors["v1", "events"] = EVENT_SELECTOR


def build_registry(runtime: Runtime, on_request=None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    register_indices(registry)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_):
        settings.posting.enabled = False
        settings.execution.max_workers = runtime.workers
        settings.watching.server_timeout = 300
        configure_watches(settings)

    kopf.on.login(registry=registry, id="login")(counting_login(on_request))

    def indices(kwargs: dict) -> dict:
        merged = _Merged(kwargs["negrl_services"], kwargs["negrl_configmaps"])
        jobs = _Merged(kwargs["negrl_jobs"], kwargs["negrl_jobsets"])
        return {"negrl_jobs": jobs, "negrl_deployments": kwargs["negrl_deployments"],
                "negrl_children": merged, "negrl_pods": kwargs["negrl_pods"],
                "negrl_job_events": kwargs["negrl_job_events"]}

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="experiment-events")
    async def on_experiment(type, body, **kwargs):  # noqa: A002 (kopf's name)
        """Every experiment event: remember the latest body; a new experiment or a new generation is queued."""
        runtime.indices = runtime.indices or indices(kwargs)
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        runtime.metrics.watch_events.labels("NegRLExperiment").inc()
        if type == "DELETED":
            clean_up(runtime.kube, body)
            runtime.bodies.pop(key, None)
            runtime.written.pop(meta["uid"], None)
            runtime.locks.pop(meta["uid"], None)
            runtime.failures.pop(key, None)
            runtime.metrics.forget(*key)
            if runtime.queue is not None:
                runtime.queue.forget(key)
            return
        before = runtime.bodies.get(key)
        runtime.bodies[key] = body
        if LEGACY_FINALIZER in (meta.get("finalizers") or []):
            release_legacy_finalizer(runtime.kube, meta)
        if before is None:
            runtime.enqueue(key, "resume" if type is None else "create")
        elif before["metadata"]["uid"] != meta["uid"]:
            runtime.enqueue(key, "create")
        elif before["metadata"].get("generation") != meta.get("generation"):
            runtime.enqueue(key, "update")

    def child_event(kind: str):
        async def on_child(namespace, labels, **_):
            """A child changed (its index is already updated): reconcile its experiment now."""
            runtime.metrics.watch_events.labels(kind).inc()
            if labels.get(MANAGED_BY_LABEL) != MANAGER:  # the server-side selector keeps these away
                runtime.metrics.foreign_events.labels(kind).inc()
                return
            name = labels.get(INSTANCE_LABEL)
            if name and (namespace, name) in runtime.bodies:
                runtime.enqueue((namespace, name), "child")
        return on_child

    for group_version_plural, kind in zip(CHILD_RESOURCES, ("Job", "Deployment", "Service", "ConfigMap", "Pod", "JobSet"),
                                          strict=True):
        kopf.on.event(*group_version_plural, registry=registry, id=f"{kind.lower()}-events")(child_event(kind))

    @kopf.on.event("v1", "events", registry=registry, id="job-event-events")
    async def on_job_event(namespace, body, **_):
        runtime.metrics.watch_events.labels("Event").inc()
        if failed_create(body) is None or (body.get("involvedObject") or {}).get("kind") != "Job":
            runtime.metrics.foreign_events.labels("Event").inc()  # the field selector keeps these away
            return
        involved = (body.get("involvedObject") or {}).get("name", "")
        for ns, name in list(runtime.bodies):
            if ns == namespace and involved.startswith(f"{name}-"):
                runtime.enqueue((ns, name), "child")

    return registry


def clean_up(kube: Kube, body) -> None:
    """storage.onDelete Delete: a Job removes the deleted experiment's artifact folder (best effort)."""
    meta = body["metadata"]
    try:
        job = cleanup_job(Owner(meta["name"], meta["namespace"], meta["uid"]),
                          ExperimentSpec.model_validate(dict(body.get("spec") or {})))
        if job is not None:
            kube.apply(job)
    except (ValidationError, ApiException) as error:
        log.warning("no artifact clean-up for %s/%s: %s", meta["namespace"], meta["name"], error)


# kopf's default finalizer: versions of this operator that ran a kopf timer put it on every experiment.
LEGACY_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def release_legacy_finalizer(kube: Kube, meta) -> None:
    """Remove the finalizer an older version left, so deleting the experiment never waits for it."""
    kept = [f for f in meta.get("finalizers") or [] if f != LEGACY_FINALIZER]
    patch = {"metadata": {"finalizers": kept, "resourceVersion": meta.get("resourceVersion")}}
    try:
        kube.merge_patch(KIND, meta["namespace"], meta["name"], patch)
    except ApiException as error:  # a conflict: the next event of this experiment tries again
        log.info("could not remove %s from %s/%s: %s", LEGACY_FINALIZER, meta["namespace"], meta["name"], error.status)
