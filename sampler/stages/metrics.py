"""Live figures of a rollout stage: Prometheus metrics on /metrics and rich progress bars.

Every stage run owns a fresh registry (several stages can run in one process under `negrl run`).
Names follow `negrl_<component>_<what>_<unit>`; counters end in `_total`; label `stage`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from negrl_operator.api.progress import progress_due, progress_line
from negrl_sampler.serving.client import Completion


class RolloutMetrics:
    def __init__(self, stage: str, registry: CollectorRegistry | None = None):
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        self._server = None
        labels = ["stage"]

        def counter(name: str, doc: str, extra: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, labels + list(extra), registry=self.registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry).labels(stage)

        self.requests = counter("negrl_sampler_requests_total", "Completion requests answered").labels(stage)
        self.request_errors = counter("negrl_sampler_request_errors_total",
                                      "Failed request attempts by kind", ["kind"])
        self.completions = counter("negrl_sampler_completions_total", "Completions received").labels(stage)
        self.generated_tokens = counter("negrl_sampler_generated_tokens_total",
                                        "Tokens generated (usage.completion_tokens)").labels(stage)
        self.prompt_tokens = counter("negrl_sampler_prompt_tokens_total", "Prompt tokens sent").labels(stage)
        self.graded = counter("negrl_sampler_graded_total", "Graded responses by result", ["result"])
        self.questions = counter("negrl_sampler_questions_done_total", "Questions completed").labels(stage)
        self.correct_ratio = gauge("negrl_sampler_correct_ratio", "Fraction of graded responses correct")
        self.unparseable_ratio = gauge("negrl_sampler_unparseable_ratio",
                                       "Fraction of graded responses with no parseable answer")
        self.request_seconds = Histogram(
            "negrl_sampler_request_duration_seconds", "Request latency, retries included", labels,
            registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        ).labels(stage)
        self.negatives = counter("negrl_credit_negatives_total", "Negatives whose pit was searched").labels(stage)
        self.pits = counter("negrl_credit_pits_found_total", "Negatives with a first pit").labels(stage)
        self.rollouts = counter("negrl_credit_rollouts_total", "Rollouts spent on pit search").labels(stage)
        self.rollouts_per_pit = gauge("negrl_credit_rollouts_per_pit_ratio", "Rollouts spent per pit found")
        self._tally = {"correct": 0, "wrong": 0, "unparseable": 0}
        self.totals = {"completions": 0, "generated_tokens": 0, "pits": 0, "rollouts": 0, "errors": 0}

    def observe_request(self, seconds: float, completion: Completion) -> None:
        self.requests.inc()
        self.request_seconds.observe(seconds)
        self.completions.inc(len(completion.choices))
        self.generated_tokens.inc(completion.completion_tokens)
        self.totals["completions"] += len(completion.choices)
        self.totals["generated_tokens"] += completion.completion_tokens
        self.prompt_tokens.inc(completion.prompt_tokens)

    def observe_error(self, kind: str) -> None:
        self.request_errors.labels(self.stage, kind).inc()
        self.totals["errors"] += 1

    def observe_grades(self, results: Iterable[bool | None]) -> None:
        for correct in results:
            result = "unparseable" if correct is None else ("correct" if correct else "wrong")
            self._tally[result] += 1
            self.graded.labels(self.stage, result).inc()
        total = sum(self._tally.values())
        if total:
            self.correct_ratio.set(self._tally["correct"] / total)
            self.unparseable_ratio.set(self._tally["unparseable"] / total)

    def observe_pit_search(self, pit: int | None, rollouts: int) -> None:
        self.negatives.inc()
        self.rollouts.inc(rollouts)
        self.totals["rollouts"] += rollouts
        if pit is not None:
            self.pits.inc()
            self.totals["pits"] += 1
        if self.totals["pits"]:
            self.rollouts_per_pit.set(self.totals["rollouts"] / self.totals["pits"])

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"stage": self.stage, **labels}) or 0.0

    def serve(self, port: int) -> None:
        if port:
            self._server, _ = start_http_server(port, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ProgressView:
    """Progress bars with live rates on a terminal (stderr); elsewhere (a pod's log) a line per tenth."""

    def __init__(self, metrics: RolloutMetrics, total: int, done: int, label: str):
        self.metrics = metrics
        self.console = Console(stderr=True)
        self.enabled = self.console.is_terminal
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"), TimeElapsedColumn(),
            console=self.console, disable=not self.enabled,
        )
        self.task = self.progress.add_task(label, total=total, completed=done, rates="")

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()

    def advance(self, questions: int = 1) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        completions = self.metrics.totals["completions"]
        tokens = self.metrics.totals["generated_tokens"]
        rates = f"{completions / elapsed:.1f} compl/s {tokens / elapsed:.0f} tok/s"
        task = self.progress.tasks[0]
        before, total = int(task.completed), int(task.total or 0)
        self.progress.update(self.task, advance=questions, rates=rates)
        if not self.enabled and progress_due(before, before + questions, total):
            print(progress_line(task.description, before + questions, total, rates), file=sys.stderr, flush=True)
