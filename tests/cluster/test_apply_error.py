"""Apply errors on the real control plane: the operator's reconcile (`handle`, in this process, with the
experiment and its status on the real API server) meets a child the server refuses with a 500 (the real
answer to a Job whose cpu request is "lots"), a server that throttles (429) or cannot be reached
(connection refused on loopback), and a spec it cannot read. Each shows in the status at once: Stalled
ApplyRejected / InvalidSpec (phase Invalid), or Reconciling ApplyRetrying with the last error while the
key backs off; never only a log line.

No operator process runs in this module: the reconciles here are the only ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client import ApiClient, Configuration

from negrl_operator.controller.kube import Kube
from negrl_operator.controller.metrics import Heartbeat, OperatorMetrics
from negrl_operator.controller.shell import Runtime, handle
from tests.cluster.test_admission import install_crd
from tests.cluster.test_operator import event_reasons, example, experiment
from tests.cluster.test_stuck import condition
from tests.fixtures.cluster import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "negrl.io", "v1alpha1", "negrlexperiments"
THROTTLED = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests", "code": 429,
             "message": "too many requests, please try again later"}


class ChildrenVia(Kube):
    """The operator's Kube, except that children's applies go elsewhere (`detour`, a Kube on a throttling
    or closed loopback port) or are changed on the way (`change`) while status writes and Events reach
    the real API server."""

    detour: Kube | None = None
    change = None

    def apply(self, manifest: dict) -> None:
        if self.detour is not None:
            self.detour.apply(manifest)
            return
        super().apply(self.change(manifest) if self.change else manifest)


def loopback_kube(port: int) -> Kube:
    configuration = Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    return Kube(ApiClient(configuration))


class Throttling:
    """A loopback HTTP server that answers every request 429, as a busy API server does."""

    def __enter__(self) -> Throttling:
        class Answer(BaseHTTPRequestHandler):
            def _throttle(self):
                body = json.dumps(THROTTLED).encode()
                self.send_response(429)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _throttle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def crd(kube_cluster):
    install_crd(kube_cluster)


@pytest.fixture
def runtime(api, crd) -> Iterator[Runtime]:
    metrics = OperatorMetrics()
    kube = ChildrenVia(api)
    runtime = Runtime(kube=kube, metrics=metrics, heartbeat=Heartbeat(metrics, 60.0))
    runtime.indices = {"negrl_jobs": {}, "negrl_deployments": {}, "negrl_children": {}, "negrl_pods": {},
                       "negrl_job_events": {}}
    yield runtime


def created(api, runtime: Runtime, namespace: str, name: str, **changes) -> tuple[str, str]:
    doc = example(namespace, name, **changes)
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, doc)
    key = (namespace, name)
    runtime.bodies[key] = experiment(api, namespace, name)
    return key


def printed(kube_cluster, namespace: str, name: str) -> list[str]:
    """The experiment's `kubectl get nrx` line, split (empty columns vanish)."""
    line = kube_cluster.kubectl("get", "nrx", name, "-n", namespace, "--no-headers").stdout
    print(kube_cluster.kubectl("get", "nrx", name, "-n", namespace, "-o", "wide").stdout)
    return line.split()


def test_a_child_refused_with_a_500_stalls_the_experiment_within_one_reconcile(kube_cluster, api, namespace,
                                                                               runtime):
    def lots(manifest: dict) -> dict:
        if manifest["kind"] == "Job":  # what a spec admitted without quantity rules would have made
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                container.setdefault("resources", {}).setdefault("requests", {})["cpu"] = "lots"
        return manifest

    runtime.kube.change = lots
    key = created(api, runtime, namespace, "lots")
    assert handle(runtime, key) == 0.5  # back-off: a spec change or a fixed admission may still help
    body = experiment(api, namespace, "lots")
    stalled = condition(body, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ApplyRejected"), body["status"]
    assert stalled["message"].startswith("API error 500: ") and "quantities must match" in stalled["message"]
    assert body["status"]["message"] == stalled["message"] and "\n" not in stalled["message"]
    assert (condition(body, "Ready")["status"], condition(body, "Reconciling")["status"]) == ("False", "False")
    assert "ApplyRejected" in event_reasons(kube_cluster, namespace, "lots")
    assert printed(kube_cluster, namespace, "lots")[2:4] == ["False", "ApplyRejected"]


def test_a_write_that_may_pass_later_is_retried_with_back_off_and_shown(kube_cluster, api, namespace, runtime):
    key = created(api, runtime, namespace, "busy")
    with Throttling() as busy:
        runtime.kube.detour = loopback_kube(busy.port)
        delays = [handle(runtime, key), handle(runtime, key)]
    body = experiment(api, namespace, "busy")
    reconciling = condition(body, "Reconciling")
    assert delays == [0.5, 1.0]
    assert (reconciling["status"], reconciling["reason"]) == ("True", "ApplyRetrying")
    assert reconciling["message"] == ("API error 429: too many requests, please try again later "
                                      "(attempt 2, next in 1s)")
    assert (condition(body, "Stalled")["status"], condition(body, "Ready")["reason"]) == ("False", "ApplyRetrying")
    assert printed(kube_cluster, namespace, "busy")[2:4] == ["False", "ApplyRetrying"]

    runtime.kube.detour = loopback_kube(free_port())  # nothing listens there: connection refused
    assert handle(runtime, key) == 2.0
    message = condition(experiment(api, namespace, "busy"), "Reconciling")["message"]
    assert message.startswith("API server unreachable: ") and message.endswith("(attempt 3, next in 2s)")

    runtime.kube.detour = None  # the server answers again: the next reconcile creates the stage and clears it
    assert handle(runtime, key) is not None and key not in runtime.failures
    body = experiment(api, namespace, "busy")
    assert condition(body, "Reconciling")["reason"] != "ApplyRetrying" and "API" not in body["status"]["message"]
    assert body["status"]["phase"] == "Running" and body["status"]["stage"] == "prepare"
    assert client.BatchV1Api(api).read_namespaced_job("busy-data-prepare", namespace).status is not None
    reasons = wait_for("the ApplyRetrying Event", lambda: event_reasons(kube_cluster, namespace, "busy"),
                       lambda found: "ApplyRetrying" in found, timeout=10)
    assert reasons.count("ApplyRetrying") == 1  # an Event when it began, not one per attempt


def test_a_spec_the_operator_cannot_read_is_invalid_with_a_one_line_message(kube_cluster, api, namespace, runtime):
    key = created(api, runtime, namespace, "unreadable")
    # as an API server with an older CRD (without the seed rules) would have admitted it
    runtime.bodies[key]["spec"]["seeds"] = [-1]
    assert handle(runtime, key) is None  # nothing to retry until the spec changes
    status = experiment(api, namespace, "unreadable")["status"]
    assert status["phase"] == "Invalid"
    assert status["message"] == "invalid spec: spec.seeds.0: Input should be greater than or equal to 0"
    stalled = condition({"status": status}, "Stalled")
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("True", "InvalidSpec", status["message"])
    assert "InvalidSpec" in event_reasons(kube_cluster, namespace, "unreadable")
    assert printed(kube_cluster, namespace, "unreadable")[1:4] == ["Invalid", "False", "InvalidSpec"]
