"""The operator's Prometheus metrics and its /metrics + /healthz HTTP endpoint.

Names follow `negrl_operator_<what>_<unit>`. Per-experiment series carry `namespace` and
`experiment` labels and are removed when the experiment is deleted.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from negrl_operator.api.status import ExperimentStatus, StageStatus, parse_time

PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed", "Degraded", "Invalid")
EXPERIMENT_LABELS = ["namespace", "experiment"]
# status.results.synthesis field -> (gauge name, help): what the teacher wrote (spec.teacher)
SYNTHESIS_GAUGES = {
    "requests": ("negrl_operator_synthesis_requests", "Requests the synthesize stage sent to the teacher."),
    "generated_tokens": ("negrl_operator_synthesis_generated_tokens", "Tokens the teacher generated."),
    "tokens_per_s": ("negrl_operator_synthesis_generated_tokens_per_second",
                     "Teacher tokens generated per second (all synthesize shards together)."),
    "acceptance_rate": ("negrl_operator_synthesis_acceptance_ratio",
                        "Teacher solutions graded correct (or agreeing) / solutions generated."),
    "cost_tokens": ("negrl_operator_synthesis_cost_tokens", "Teacher tokens paid for: prompt plus generated."),
    "examples": ("negrl_operator_synthesis_examples", "D_syn records the synthesize stage wrote."),
}
SYNTHESIS_DROPPED = ("duplicates", "contaminated")  # the `reason` label of negrl_operator_synthesis_dropped


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.experiments = Gauge("negrl_operator_experiments", "Experiments by phase.", ["phase"], registry=r)
        self.phase = Gauge("negrl_operator_experiment_phase", "1 for the experiment's current phase.",
                           [*EXPERIMENT_LABELS, "phase"], registry=r)
        self.stage_duration = Gauge("negrl_operator_stage_duration_seconds", "Wall time of each finished stage.",
                                    [*EXPERIMENT_LABELS, "stage", "kind"], registry=r)
        self.stages_running = Gauge("negrl_operator_stages_running", "Stages with a running Job.", EXPERIMENT_LABELS,
                                    registry=r)
        self.accuracy = Gauge("negrl_operator_policy_accuracy_ratio", "Greedy pass@1 of each evaluated policy.",
                              [*EXPERIMENT_LABELS, "policy"], registry=r)
        self.pass_k = Gauge("negrl_operator_policy_pass_at_k_ratio", "Sampled pass@k of each evaluated policy.",
                            [*EXPERIMENT_LABELS, "policy"], registry=r)
        self.items = Gauge("negrl_operator_result_items", "Counts from the stage summaries (samples, pairs, pits...).",
                           [*EXPERIMENT_LABELS, "item"], registry=r)
        self.synthesis = {field: Gauge(name, text, EXPERIMENT_LABELS, registry=r)
                          for field, (name, text) in SYNTHESIS_GAUGES.items()}
        self.synthesis_dropped = Gauge("negrl_operator_synthesis_dropped",
                                       "Teacher outputs the synthesize stage dropped, by reason.",
                                       [*EXPERIMENT_LABELS, "reason"], registry=r)
        self.reconcile_seconds = Histogram(
            "negrl_operator_reconcile_duration_seconds", "Time of one observe-plan-apply pass.", ["trigger"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.reconciles = Counter("negrl_operator_reconciles_total", "Reconcile passes.", ["trigger"], registry=r)
        self.errors = Counter("negrl_operator_reconcile_errors_total", "Failed reconcile passes.", ["reason"],
                              registry=r)
        self.requests = Counter("negrl_operator_api_requests_total", "Requests to the API server.",
                                ["client", "verb"], registry=r)
        self.request_seconds = Histogram(
            "negrl_operator_api_request_duration_seconds", "API request latency (watches: until headers).",
            ["client", "verb"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )
        self.transitions = Counter("negrl_operator_stage_transitions_total", "Stage state changes.", ["kind", "state"],
                                   registry=r)
        self.watch_events = Counter("negrl_operator_watch_events_total",
                                    "Watch events the operator received, by kind.", ["kind"], registry=r)
        self.foreign_events = Counter("negrl_operator_foreign_watch_events_total",
                                      "Watch events of objects the operator does not manage (0 with server-side "
                                      "selectors).", ["kind"], registry=r)
        self.last_reconcile = Gauge("negrl_operator_last_reconcile_timestamp_seconds",
                                    "Unix time of the last successful reconcile.", registry=r)
        self._phases: dict[tuple[str, str], str] = {}
        self._series: dict[tuple[str, str], list[tuple[Gauge, tuple[str, ...]]]] = {}
        self._lock = threading.Lock()

    def request_observer(self, client: str):
        """A callback (verb, seconds) counting one client's requests."""

        def observe(verb: str, seconds: float) -> None:
            self.requests.labels(client, verb).inc()
            self.request_seconds.labels(client, verb).observe(seconds)

        return observe

    def record(self, namespace: str, name: str, status: ExperimentStatus) -> None:
        """Export an experiment's status (replacing what was exported for it before)."""
        key = (namespace, name)
        series = [(self.phase, (namespace, name, phase)) for phase in PHASES]
        for phase in PHASES:
            self.phase.labels(namespace, name, phase).set(1 if status.phase == phase else 0)
        self.stages_running.labels(namespace, name).set(sum(s.state == "Running" for s in status.stages))
        series.append((self.stages_running, (namespace, name)))
        for stage in status.stages:
            seconds = stage_seconds(stage)
            if seconds is not None:
                self.stage_duration.labels(namespace, name, stage.name, stage.kind).set(seconds)
                series.append((self.stage_duration, (namespace, name, stage.name, stage.kind)))
        for policy in status.results.policies:
            for gauge, value in ((self.accuracy, policy.accuracy), (self.pass_k, policy.pass_k)):
                if value is not None:
                    gauge.labels(namespace, name, policy.policy).set(value)
                    series.append((gauge, (namespace, name, policy.policy)))
        for item, value in status.results.counts.model_dump().items():
            if value is not None:
                self.items.labels(namespace, name, item).set(value)
                series.append((self.items, (namespace, name, item)))
        series += self._record_synthesis(namespace, name, status)
        with self._lock:
            self._phases[key] = status.phase
            self._series[key] = series
            self._count_phases()

    def _record_synthesis(self, namespace: str, name: str, status: ExperimentStatus) -> list:
        synthesis = status.results.synthesis
        if synthesis is None:
            return []
        series, values = [], synthesis.model_dump(by_alias=False)
        for field, gauge in self.synthesis.items():
            if values[field] is not None:
                gauge.labels(namespace, name).set(values[field])
                series.append((gauge, (namespace, name)))
        for reason in SYNTHESIS_DROPPED:
            if values[reason] is not None:
                self.synthesis_dropped.labels(namespace, name, reason).set(values[reason])
                series.append((self.synthesis_dropped, (namespace, name, reason)))
        return series

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((namespace, name), None)
            for gauge, labels in self._series.pop((namespace, name), []):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
            self._count_phases()

    def _count_phases(self) -> None:
        for phase in PHASES:
            self.experiments.labels(phase).set(sum(1 for p in self._phases.values() if p == phase))

    def known(self) -> int:
        return len(self._phases)


def stage_seconds(stage: StageStatus) -> float | None:
    if not (stage.start_time and stage.finish_time):
        return None
    return max(0.0, (parse_time(stage.finish_time) - parse_time(stage.start_time)).total_seconds())


class Heartbeat:
    """Liveness: unhealthy when experiments exist but no reconcile finished for `stall_after_s`."""

    def __init__(self, metrics: OperatorMetrics, stall_after_s: float):
        self.metrics, self.stall_after_s = metrics, stall_after_s
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()
        self.metrics.last_reconcile.set(time.time())

    def health(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last
        if self.metrics.known() and idle > self.stall_after_s:
            return False, f"no reconcile finished for {idle:.0f}s (limit {self.stall_after_s:.0f}s)\n"
        return True, "ok\n"


def serve(metrics: OperatorMetrics, heartbeat: Heartbeat, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.startswith("/healthz"):
                ok, text = heartbeat.health()
                code, body, kind = (200 if ok else 503), text.encode(), "text/plain"
            elif self.path.startswith("/metrics"):
                code, body, kind = 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST
            else:
                code, body, kind = 404, b"not found\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
