"""Leader election: of several operator replicas only the holder of a coordination.k8s.io Lease runs.

`decide` is the whole policy, a pure function of the Lease record, how long this replica has seen
that record unchanged (on its own clock, as client-go does, so no two machines' clocks are
compared), who it is, and whether it leads or is stopping. `LeaderLease` is the thin loop around
it. What it adds to the kubernetes client's LeaderElection, which can neither refuse nor let go:

- a replica that is stopping (SIGTERM) never takes the Lease, even a free one;
- a leader that stops hands the Lease over (empty holder, duration 1 s: client-go's
  ReleaseOnCancel), so a standby, which asks every `retry_s`, leads within about a second
  instead of after the Lease's duration;
- a leader that cannot renew within its deadline, or finds another holder, exits the process at
  once: two replicas must never reconcile together, and Kubernetes restarts it as a standby.

Every write carries the resourceVersion it read, so of two replicas racing for a free Lease the
API server lets exactly one win.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

log = logging.getLogger("negrl.operator")
UNREACHABLE = (ApiException, HTTPError, OSError)  # refused, unreachable or timed out: try again next period
LOST_LEASE_EXIT = 75  # EX_TEMPFAIL: restart me
RELEASED_DURATION_S = 1  # what a released Lease says (client-go's ReleaseOnCancel writes the same)


class Action(StrEnum):
    CREATE = "create"  # there is no Lease yet
    ACQUIRE = "acquire"  # free (released) or expired: take it
    RENEW = "renew"  # it is mine
    RELEASE = "release"  # it is mine and I am stopping: hand it over
    WAIT = "wait"  # another replica holds a live Lease
    LOST = "lost"  # I led, and the Lease names someone else now
    STOP = "stop"  # I am stopping and do not hold it: never take it


WRITES = (Action.CREATE, Action.ACQUIRE, Action.RENEW, Action.RELEASE)


@dataclass(frozen=True)
class LeaseRecord:
    holder: str = ""  # "" when released
    duration_s: int = 15
    acquired: str = ""  # RFC 3339 micro-time strings, as the API server keeps them
    renewed: str = ""
    transitions: int = 0


def decide(record: LeaseRecord | None, unchanged_s: float, me: str, leading: bool, stopping: bool) -> Action:
    """What this replica does next. `unchanged_s`: how long it has seen exactly this record."""
    if stopping:
        return Action.RELEASE if record is not None and record.holder == me else Action.STOP
    if record is None:
        return Action.CREATE
    if record.holder == me:
        return Action.RENEW
    if leading:
        return Action.LOST
    if not record.holder or unchanged_s >= record.duration_s:
        return Action.ACQUIRE
    return Action.WAIT


def written(action: Action, record: LeaseRecord | None, me: str, now: str, duration_s: int) -> LeaseRecord:
    """The record a write for `action` puts into the Lease (`now`: RFC 3339 micro-time)."""
    transitions = record.transitions if record else 0
    if action == Action.CREATE:
        return LeaseRecord(me, duration_s, now, now, 0)
    if action == Action.ACQUIRE:
        return LeaseRecord(me, duration_s, now, now, transitions + 1)
    if action == Action.RENEW:
        return replace(record, duration_s=duration_s, renewed=now)
    if action == Action.RELEASE:
        return LeaseRecord("", RELEASED_DURATION_S, now, now, transitions)
    raise ValueError(f"{action} writes nothing")


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(record: LeaseRecord) -> dict:
    return {"holderIdentity": record.holder, "leaseDurationSeconds": record.duration_s,
            "acquireTime": record.acquired or None, "renewTime": record.renewed or None,
            "leaseTransitions": record.transitions}


def record_of(spec: dict | None) -> LeaseRecord:
    """A Lease's spec (camelCase, times as strings) as a record; missing fields read as released."""
    spec = spec or {}
    return LeaseRecord(spec.get("holderIdentity") or "", int(spec.get("leaseDurationSeconds") or RELEASED_DURATION_S),
                       spec.get("acquireTime") or "", spec.get("renewTime") or "", int(spec.get("leaseTransitions") or 0))


def identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"


@dataclass
class Timing:
    duration_s: int = 15  # a silent leader blocks the Lease this long
    retry_s: float = 1.0  # a standby asks this often (the gap after a release)

    @property
    def renew_s(self) -> float:
        return max(0.5, self.duration_s / 5)

    @property
    def deadline_s(self) -> float:  # a leader that could not renew for this long stops leading
        return self.duration_s * 2 / 3

    @property
    def request_timeout_s(self) -> float:  # a hung request must not outlast the deadline
        return max(1.0, self.deadline_s / 3)


class LeaderLease:
    """acquire (blocks), keep (renews on a thread), release: the I/O around `decide`."""

    def __init__(self, api: ApiClient, name: str, namespace: str, me: str, timing: Timing | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.leases, self.name, self.namespace, self.me = CoordinationV1Api(api), name, namespace, me
        self.timing, self.clock = timing or Timing(), clock
        self.leading = False
        self.seen: tuple[LeaseRecord | None, float] = (None, clock())  # the last record read, since when
        self.renewed_at = 0.0
        self.halt = threading.Event()
        self.renewer: threading.Thread | None = None

    def acquire(self, stopping: threading.Event) -> bool:
        """Block until this replica holds the Lease (True) or until `stopping` is set (False: it never
        takes the Lease after that)."""
        log.info("%s waits for the Lease %s/%s", self.me, self.namespace, self.name)
        while not stopping.is_set():
            action, done = self.step(stopping.is_set())
            if action in (Action.CREATE, Action.ACQUIRE, Action.RENEW) and done:
                self.leading, self.renewed_at = True, self.clock()
                if stopping.is_set():  # the signal came during the write: give it straight back
                    self.release()
                    return False
                log.info("%s leads (Lease %s/%s)", self.me, self.namespace, self.name)
                return True
            stopping.wait(self.timing.retry_s)
        return False

    def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew on a daemon thread until `release`; `on_lost()` when the Lease is no longer ours."""

        def renew() -> None:
            while not self.halt.wait(self.timing.renew_s):
                try:
                    action, done = self.step(False)
                except Exception:  # noqa: BLE001 (a bug must not stop renewing silently: the deadline decides)
                    log.exception("renewing the Lease %s/%s", self.namespace, self.name)
                    action, done = Action.WAIT, False
                if done:
                    self.renewed_at = self.clock()
                elif action == Action.LOST or self.clock() - self.renewed_at > self.timing.deadline_s:
                    log.error("%s lost the Lease %s/%s (%s)", self.me, self.namespace, self.name, action)
                    on_lost()
                    return

        self.renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        self.renewer.start()

    def release(self) -> bool:
        """Stop renewing and hand the Lease over, if it is still ours."""
        self.halt.set()
        if self.renewer is not None:
            self.renewer.join()
        for _ in range(3):  # a conflict with a standby's read-then-write: read again
            action, done = self.step(True)
            if done or action != Action.RELEASE:
                break
        self.leading = False
        if done:
            log.info("%s released the Lease %s/%s", self.me, self.namespace, self.name)
        return done

    def step(self, stopping: bool) -> tuple[Action, bool]:
        """Read the Lease, decide, write what the decision asks; (action, whether the write went through)."""
        try:  # raw JSON: the times stay the strings the server keeps, so an unchanged record compares equal
            lease = json.loads(self.leases.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.timing.request_timeout_s).data)
        except UNREACHABLE as error:
            if getattr(error, "status", None) != 404:
                log.warning("reading the Lease %s/%s: %s", self.namespace, self.name, describe(error))
                return Action.WAIT, False
            lease = None
        record = record_of(lease.get("spec")) if lease else None
        self.observe(record)
        action = decide(record, self.clock() - self.seen[1], self.me, self.leading, stopping)
        if action not in WRITES:
            return action, False
        new = written(action, record, self.me, micro_time(datetime.now(UTC)), self.timing.duration_s)
        return action, self.write(new, lease["metadata"]["resourceVersion"] if lease else None)

    def observe(self, record: LeaseRecord | None) -> None:
        before = self.seen[0]
        if record != before:
            self.seen = (record, self.clock())
            if record and before and record.holder != before.holder:
                log.info("the Lease %s/%s: holder %r -> %r", self.namespace, self.name, before.holder, record.holder)

    def write(self, record: LeaseRecord, resource_version: str | None) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": lease_spec(record),
                "metadata": {"name": self.name, "namespace": self.namespace}}
        timeout = self.timing.request_timeout_s
        try:
            if resource_version is None:
                self.leases.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
            else:
                body["metadata"]["resourceVersion"] = resource_version  # a concurrent write makes this a 409
                self.leases.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=timeout)
        except UNREACHABLE as error:
            log.info("writing the Lease %s/%s: %s", self.namespace, self.name, describe(error))
            return False
        self.observe(record)
        return True


def describe(error: Exception) -> str:
    return f"API error {error.status}" if isinstance(error, ApiException) else f"{type(error).__name__}: {error}"


def exit_when_lost() -> None:
    """The kopf loop runs on the main thread and must not outlive the Lease: end the process now."""
    log.error("exiting so that only one replica reconciles")
    logging.shutdown()
    os._exit(LOST_LEASE_EXIT)
