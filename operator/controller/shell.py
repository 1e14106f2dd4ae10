"""The kopf shell: observe -> plan -> apply -> status, whenever an experiment or one of its children changes.

kopf watches (server-side filtered to our children) fill indices, so a reconcile reads nothing from
the API server but the experiment's claim (claim.py, cached); every watch event queues its experiment on the work queue (workqueue.py), whose
workers reconcile it; a slow timer per key is only a safety net. A reconcile writes only what the
plan changes (server-side apply with one field manager, deletes, suspension, the status when it
changed, Events). Errors are mapped once, in `handle`: API errors back off exponentially, a refused
spec or child is reported as Stalled with the server's message. No kopf handler that needs a
finalizer is registered, so deleting an experiment never waits for the operator.
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

from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from negrl_operator.api.experiment import ClusterExperimentSpec
from negrl_operator.api.status import ExperimentStatus, parse_status
from negrl_operator.api.termination import shorten
from negrl_operator.controller.claim import ClaimReader
from negrl_operator.controller.election import LeaderLease, Timing, exit_when_lost, identity
from negrl_operator.controller.kube import EventPoster, Kube, apply_plan
from negrl_operator.controller.metrics import Heartbeat, OperatorMetrics, serve
from negrl_operator.controller.refusal import api_message, refused, report, spec_problems
from negrl_operator.controller.shutdown import Shutdown, hand_over, run_kopf
from negrl_operator.controller.watch import build_registry
from negrl_operator.controller.workqueue import WorkQueue, retry_delay
from negrl_operator.reconcile.condition import APPLY_REJECTED, APPLY_RETRYING, INVALID_SPEC, refresh_after
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import ClaimState, Observed
from negrl_operator.reconcile.plan import Plan, plan

log = logging.getLogger("negrl.operator")
Key = tuple[str, str]  # (namespace, name) of an experiment


@dataclass
class Runtime:
    kube: Kube
    metrics: OperatorMetrics
    heartbeat: Heartbeat
    events: EventPoster | None = None
    claims: ClaimReader | None = None  # None: claims are not read (no StorageShared condition)
    interval_s: float = 300.0  # the safety net: child events drive reconciles
    workers: int = 8
    locks: defaultdict = field(default_factory=lambda: defaultdict(threading.Lock))
    written: dict[str, ExperimentStatus] = field(default_factory=dict)  # uid -> last status we wrote
    bodies: dict[Key, object] = field(default_factory=dict)  # (namespace, name) -> latest experiment body
    triggers: dict[Key, str] = field(default_factory=dict)  # why a key was queued (a metrics label)
    failures: dict[Key, int] = field(default_factory=dict)  # consecutive failed reconciles of a key
    indices: dict | None = None
    queue: WorkQueue | None = None

    def recorded(self, uid: str, status: dict | None) -> ExperimentStatus:
        """Our last write wins over the (possibly older) status the watch delivered with the body."""
        return self.written.get(uid) or parse_status(status)

    def enqueue(self, key: Key, trigger: str, delay_s: float = 0.0) -> None:
        self.triggers.setdefault(key, trigger)
        if self.queue is not None:
            self.queue.add(key, delay_s)


def observe(owner: Owner, jobs, deployments, others, pods, job_events=None, claim: ClaimState | None = None) -> Observed:
    """This experiment's children from the indices (children of a same-named predecessor are ignored)."""
    key = (owner.namespace, owner.name)
    own_jobs = {job.name: job for job in jobs.get(key, []) if job.owner_uid == owner.uid}
    job_uids = {job.uid for job in own_jobs.values()}
    events = job_events or {}
    return Observed(
        jobs=own_jobs,
        deployments={d.name: d for d in deployments.get(key, []) if d.owner_uid == owner.uid},
        others={(c.kind, c.name): c for c in others.get(key, []) if c.owner_uid == owner.uid},
        pods=tuple(pod for pod in pods.get(key, []) if pod.owner_uid in job_uids or (not pod.job and pod.policy)
                   or (pod.job in own_jobs and own_jobs[pod.job].kind == "JobSet")),  # JobSet pods: owned by its Jobs
        job_events={name: found[-1] for name in own_jobs if (found := list(events.get((owner.namespace, name), ())))},
        claim=claim,
    )


def reconcile(runtime: Runtime, trigger: str, body, indices: dict, ordered: bool = False) -> Plan:
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    started = time.perf_counter()
    with runtime.locks[owner.uid]:
        spec = ClusterExperimentSpec.model_validate(dict(body.get("spec") or {}))
        recorded = runtime.recorded(owner.uid, body.get("status"))
        claim = runtime.claims.read(owner.namespace, spec.storage.claim_name) if runtime.claims else None
        observed = observe(owner, indices["negrl_jobs"], indices["negrl_deployments"], indices["negrl_children"],
                           indices["negrl_pods"], indices.get("negrl_job_events"), claim)
        result = plan(owner, int(meta.get("generation") or 0), spec, recorded, observed, datetime.now(UTC))
        apply_plan(runtime.kube, owner, result, result.status != recorded, runtime.events, ordered)
        runtime.written[owner.uid] = result.status
    for stage in result.status.stages:
        before = recorded.stage_named(stage.name)
        if before is None or before.state != stage.state:
            runtime.metrics.transitions.labels(stage.kind, stage.state).inc()
    runtime.metrics.record(owner.namespace, owner.name, result.status)
    runtime.metrics.reconcile_seconds.labels(trigger).observe(time.perf_counter() - started)
    runtime.metrics.reconciles.labels(trigger).inc()
    runtime.heartbeat.beat()
    return result


def handle(runtime: Runtime, key: Key) -> float | None:
    """Reconcile one queued experiment; the one place errors are mapped (and counted). Returns when
    to reconcile it next: the plan's requeue, a back-off after an error, or the safety-net interval."""
    body = runtime.bodies.get(key)
    trigger = runtime.triggers.pop(key, "requeue")  # no event queued it: requeue_after, back-off or safety net
    if body is None or runtime.indices is None:
        return None
    try:
        result = reconcile(runtime, trigger, body, runtime.indices, ordered=key in runtime.failures)
    except ValidationError as error:
        runtime.metrics.errors.labels(INVALID_SPEC).inc()
        report(runtime, body, INVALID_SPEC, spec_problems(error))
        return None  # until the spec changes (its event queues the key again)
    except ApiException as error:
        runtime.metrics.errors.labels(f"Api{error.status}").inc()
        return _failed(runtime, key, body, f"API error {error.status}: {api_message(error)}", refused(error))
    except HTTPError as error:  # no answer: the connection failed or timed out
        runtime.metrics.errors.labels("Unreachable").inc()
        return _failed(runtime, key, body, f"API server unreachable: {shorten(str(error), 300)}", refusal=False)
    except Exception:
        runtime.metrics.errors.labels("Unexpected").inc()
        failures = runtime.failures[key] = runtime.failures.get(key, 0) + 1
        log.exception("reconcile of %s/%s failed", *key)
        return retry_delay(failures)
    runtime.failures.pop(key, None)
    delay = min(result.requeue_after or runtime.interval_s, runtime.interval_s)
    stale = refresh_after(result.status, datetime.now(UTC))  # a "(2m)" in a message is recomputed in time
    return delay if stale is None else min(delay, stale)


def _failed(runtime: Runtime, key: Key, body, message: str, refusal: bool) -> float:
    """A write the API server refused (Stalled ApplyRejected) or did not take this time (Reconciling
    ApplyRetrying, with the attempt); either way the key is retried with back-off."""
    failures = runtime.failures[key] = runtime.failures.get(key, 0) + 1
    delay = retry_delay(failures)
    runtime.heartbeat.beat()  # the operator works; this experiment's child is refused or the server busy
    if refusal:
        report(runtime, body, APPLY_REJECTED, message)
    else:
        report(runtime, body, APPLY_RETRYING, f"{message} (attempt {failures}, next in {delay:g}s)")
    log.warning("reconcile of %s/%s: %s (attempt %d)", *key, message, failures)
    return delay


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="negrl operator", description="Run the NegRLExperiment operator.")
    parser.add_argument("--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: every namespace")
    parser.add_argument("--port", type=int, default=int(env("NEGRL_OPERATOR_PORT", "8080")),
                        help="port of /metrics and /healthz")
    parser.add_argument("--interval", type=float, default=float(env("NEGRL_RECONCILE_INTERVAL", "300")),
                        help="seconds between safety-net reconciles of each experiment (child events drive the rest)")
    parser.add_argument("--stall-after", type=float, default=float(env("NEGRL_STALL_AFTER", "0")),
                        help="/healthz fails when no reconcile finished for this long (default: 2 intervals, >= 60s)")
    parser.add_argument("--workers", type=int, default=int(env("NEGRL_OPERATOR_WORKERS", "8")),
                        help="reconciles running at once")
    parser.add_argument("--leader-elect", action="store_true", default=env("NEGRL_LEADER_ELECT", "") == "true",
                        help="run only while holding the Lease --lease-name in --lease-namespace (several replicas)")
    parser.add_argument("--lease-name", default=env("NEGRL_LEASE_NAME", "negrl-operator"))
    parser.add_argument("--lease-namespace", default=env("NEGRL_LEASE_NAMESPACE", env("POD_NAMESPACE", "default")))
    parser.add_argument("--lease-duration", type=float, default=float(env("NEGRL_LEASE_DURATION", "15")),
                        help="seconds the Lease of a leader that died blocks the next one (a stopping leader releases it)")
    parser.add_argument("--lease-retry", type=float, default=float(env("NEGRL_LEASE_RETRY", "1")),
                        help="seconds between a standby's attempts to take the Lease")
    parser.add_argument("--shutdown-timeout", type=float, default=float(env("NEGRL_SHUTDOWN_TIMEOUT", "20")),
                        help="on SIGTERM, seconds to wait for running reconciles before releasing the Lease")
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
    if not args.verbose:  # kopf logs every handler run at INFO: one line per experiment per event
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    metrics = OperatorMetrics()
    stall = args.stall_after or max(60.0, 2 * args.interval)
    heartbeat = Heartbeat(metrics, stall)
    kube = Kube(load_kube_config(), on_request=metrics.request_observer("negrl"))
    shutdown = Shutdown().install()  # before the Lease: a replica told to stop never takes it
    serve(metrics, heartbeat, args.port)
    lease = None
    if args.leader_elect:
        lease = LeaderLease(load_kube_config(), args.lease_name, args.lease_namespace, identity(),
                            Timing(max(1, round(args.lease_duration)), args.lease_retry))
        if not lease.acquire(shutdown.stopping):  # blocks while another replica leads
            log.info("stopped before leading; the Lease is left to the other replicas")
            return 0
        lease.keep(on_lost=exit_when_lost)
    runtime = Runtime(kube=kube, metrics=metrics, heartbeat=heartbeat, events=EventPoster(kube),
                      claims=ClaimReader(kube), interval_s=args.interval, workers=args.workers)
    runtime.queue = WorkQueue(lambda key: handle(runtime, key), workers=args.workers)
    registry = build_registry(runtime, on_request=metrics.request_observer("kopf"))
    log.info("negrl operator: metrics and /healthz on :%d, safety-net reconcile every %.0fs", args.port, args.interval)
    try:
        run_kopf(shutdown, registry=registry, standalone=True, clusterwide=not args.namespace,
                 namespaces=args.namespace or (), priority=0)  # until SIGTERM
    finally:  # a standby leads within --lease-retry, not --lease-duration
        hand_over(runtime.queue, lease, args.shutdown_timeout)
    return 0
