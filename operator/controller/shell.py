"""The kopf shell: observe -> plan -> apply -> status, on create/resume/update and on a timer.

Children are observed through kopf indices (filled from watch streams), so a reconcile reads
nothing from the API server; it writes only what the plan changes (server-side apply with one field
manager, deletes, suspension, the status when it changed, Events). Errors propagate to the handler
wrapper, which maps them once: API errors and conflicts are retried, an invalid spec is reported.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import kopf
from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from negrl_operator.api.experiment import GROUP, PLURAL, VERSION, ExperimentSpec
from negrl_operator.api.status import ExperimentStatus
from negrl_operator.controller.kube import EventPoster, Kube, apply_plan
from negrl_operator.controller.metrics import Heartbeat, OperatorMetrics, serve
from negrl_operator.reconcile.condition import EventRecord
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import (
    INSTANCE_LABEL,
    JOB_NAME_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    Observed,
    child_state,
    deployment_state,
    job_state,
    jobset_state,
    pod_report,
)
from negrl_operator.reconcile.plan import plan

log = logging.getLogger("negrl.operator")
MANAGED = {MANAGED_BY_LABEL: MANAGER}


@dataclass
class Runtime:
    kube: Kube
    metrics: OperatorMetrics
    heartbeat: Heartbeat
    events: EventPoster | None = None
    interval_s: float = 10.0
    workers: int = 8
    locks: defaultdict = field(default_factory=lambda: defaultdict(threading.Lock))
    written: dict[str, ExperimentStatus] = field(default_factory=dict)  # uid -> last status we wrote

    def recorded(self, uid: str, status: dict | None) -> ExperimentStatus:
        """Our last write wins over the (possibly older) status the watch delivered with the body."""
        return self.written.get(uid) or ExperimentStatus.model_validate(dict(status or {}))


def _key(namespace: str | None, labels) -> tuple[str | None, str | None]:
    return namespace, labels.get(INSTANCE_LABEL)


def observe(owner: Owner, jobs, deployments, others, pods) -> Observed:
    """This experiment's children from the indices (children of a same-named predecessor are ignored)."""
    key = (owner.namespace, owner.name)
    own_jobs = {job.name: job for job in jobs.get(key, []) if job.owner_uid == owner.uid}
    job_uids = {job.uid for job in own_jobs.values()}
    return Observed(
        jobs=own_jobs,
        deployments={d.name: d for d in deployments.get(key, []) if d.owner_uid == owner.uid},
        others={(c.kind, c.name): c for c in others.get(key, []) if c.owner_uid == owner.uid},
        pods=tuple(pod for pod in pods.get(key, []) if pod.owner_uid in job_uids  # JobSet pods: owned by its Jobs
                   or (pod.job in own_jobs and own_jobs[pod.job].kind == "JobSet")),
    )


def reconcile(runtime: Runtime, trigger: str, body, indices: dict) -> None:
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    started = time.perf_counter()
    with runtime.locks[owner.uid]:
        spec = ExperimentSpec.model_validate(dict(body.get("spec") or {}))
        recorded = runtime.recorded(owner.uid, body.get("status"))
        observed = observe(owner, indices["negrl_jobs"], indices["negrl_deployments"], indices["negrl_children"],
                           indices["negrl_pods"])
        result = plan(owner, int(meta.get("generation") or 0), spec, recorded, observed, datetime.now(UTC))
        apply_plan(runtime.kube, owner, result, result.status != recorded, runtime.events)
        runtime.written[owner.uid] = result.status
    for stage in result.status.stages:
        before = recorded.stage_named(stage.name)
        if before is None or before.state != stage.state:
            runtime.metrics.transitions.labels(stage.kind, stage.state).inc()
    runtime.metrics.record(owner.namespace, owner.name, result.status)
    runtime.metrics.reconcile_seconds.labels(trigger).observe(time.perf_counter() - started)
    runtime.metrics.reconciles.labels(trigger).inc()
    runtime.heartbeat.beat()


def handle(runtime: Runtime, trigger: str, body, indices: dict) -> None:
    """The one place errors are mapped to kopf outcomes (and counted)."""
    try:
        reconcile(runtime, trigger, body, indices)
    except ValidationError as error:
        runtime.metrics.errors.labels("InvalidSpec").inc()
        meta = body["metadata"]
        owner = Owner(meta["name"], meta["namespace"], meta["uid"])
        runtime.kube.post_event(owner, EventRecord("Warning", "InvalidSpec", str(error)[:1000]))  # not queued: rare
        raise kopf.PermanentError(f"invalid spec: {error}") from error
    except ApiException as error:
        runtime.metrics.errors.labels(f"Api{error.status}").inc()
        raise kopf.TemporaryError(f"API error {error.status}: {error.reason}", delay=min(runtime.interval_s, 5)) from error
    except Exception:
        runtime.metrics.errors.labels("Unexpected").inc()
        raise


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

    @kopf.index("v1", "pods", labels={**MANAGED, JOB_NAME_LABEL: kopf.PRESENT}, registry=registry, id="negrl_pods")
    def negrl_pods(namespace, labels, body, **_):
        return {_key(namespace, labels): pod_report(body)}


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


def build_registry(runtime: Runtime, on_request=None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    register_indices(registry)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        settings.posting.enabled = False
        settings.execution.max_workers = runtime.workers
        settings.watching.server_timeout = 300

    kopf.on.login(registry=registry, id="login")(counting_login(on_request))

    def indices(kwargs: dict) -> dict:
        merged = _Merged(kwargs["negrl_services"], kwargs["negrl_configmaps"])
        jobs = _Merged(kwargs["negrl_jobs"], kwargs["negrl_jobsets"])
        return {"negrl_jobs": jobs, "negrl_deployments": kwargs["negrl_deployments"],
                "negrl_children": merged, "negrl_pods": kwargs["negrl_pods"]}

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-resume")
    def on_resume(body, **kwargs):
        handle(runtime, "resume", body, indices(kwargs))

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry, id="reconcile-create")
    def on_create(body, **kwargs):
        handle(runtime, "create", body, indices(kwargs))

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry, id="reconcile-update")
    def on_update(body, **kwargs):
        handle(runtime, "update", body, indices(kwargs))

    @kopf.timer(GROUP, VERSION, PLURAL, interval=runtime.interval_s, initial_delay=runtime.interval_s,
                registry=registry, id="reconcile-timer")
    def on_timer(body, **kwargs):
        handle(runtime, "timer", body, indices(kwargs))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="forget-deleted")
    def on_event(type, body, **_):  # noqa: A002 (kopf's name)
        if type == "DELETED":
            meta = body["metadata"]
            runtime.written.pop(meta["uid"], None)
            runtime.locks.pop(meta["uid"], None)
            runtime.metrics.forget(meta["namespace"], meta["name"])

    return registry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="negrl operator", description="Run the NegRLExperiment operator.")
    parser.add_argument("--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: every namespace")
    parser.add_argument("--port", type=int, default=int(env("NEGRL_OPERATOR_PORT", "8080")),
                        help="port of /metrics and /healthz")
    parser.add_argument("--interval", type=float, default=float(env("NEGRL_RECONCILE_INTERVAL", "10")),
                        help="seconds between periodic reconciles of each experiment")
    parser.add_argument("--stall-after", type=float, default=float(env("NEGRL_STALL_AFTER", "0")),
                        help="/healthz fails when no reconcile finished for this long (default: 10 intervals, >= 60s)")
    parser.add_argument("--workers", type=int, default=int(env("NEGRL_OPERATOR_WORKERS", "8")),
                        help="reconciles running at once")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def load_kube_config() -> ApiClient:
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    api = ApiClient()
    api.configuration.connection_pool_maxsize = 64
    return ApiClient(api.configuration)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # kopf logs every handler run at INFO: one line per experiment per interval
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    metrics = OperatorMetrics()
    stall = args.stall_after or max(60.0, 10 * args.interval)
    heartbeat = Heartbeat(metrics, stall)
    kube = Kube(load_kube_config(), on_request=metrics.request_observer("negrl"))
    runtime = Runtime(kube=kube, metrics=metrics, heartbeat=heartbeat, events=EventPoster(kube),
                      interval_s=args.interval, workers=args.workers)
    registry = build_registry(runtime, on_request=metrics.request_observer("kopf"))
    serve(metrics, heartbeat, args.port)
    log.info("negrl operator: metrics and /healthz on :%d, reconcile every %.1fs", args.port, args.interval)
    kopf.run(registry=registry, standalone=True, clusterwide=not args.namespace, namespaces=args.namespace or (),
             priority=0)
    return 0
