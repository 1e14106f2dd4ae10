"""The answer grader: ``grade(response, reference, task) -> Grade`` and the pooled ``Grader``.

Each response is extracted (``answer``) and compared in this process by the pure rules of
``equivalence`` and ``number``: GSM8K numbers, plain numbers, exact sequences and everything else
those rules decide never touch sympy or a subprocess. Pairs they cannot decide go, batched, to the
worker pool (``pool``), where ``symbolic`` compares them under a hard deadline and a memory cap.

A grade is ``correct`` True/False, or None (unparseable) with a reason: ``no-answer``, ``timeout``,
``parse-error``, ``blocked:<bound>``, ``worker-died``, ``symbolic-error:<type>``, ``bad-input``,
``unknown-task``. Grading never raises on any response text.

Workers come from multiprocessing's forkserver, which imports the caller's ``__main__`` in each
worker: a script that grades must keep its top-level work under ``if __name__ == "__main__":``
(the ``negrl`` command and ``python -m`` entry points already do).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from negrl_sampler.grading.answer import TASKS, Task, extract, guess_task, reference_answer, split_sequence
from negrl_sampler.grading.equivalence import MAX_ANSWER_CHARS, decide
from negrl_sampler.grading.number import Blocked
from negrl_sampler.grading.pool import WorkerPool
from negrl_sampler.record import Grade

MAX_RESPONSE_CHARS = 1_000_000
COUNTERS = ("graded", "correct", "wrong", "unparseable", "timeouts", "worker_restarts", "symbolic")

__all__ = ["Grade", "Grader", "Task", "grade", "grade_many"]


@dataclass(frozen=True)
class Pending:
    extracted: str
    reference: str


def shown(extracted: str) -> str:
    return extracted if len(extracted) <= MAX_ANSWER_CHARS else extracted[:MAX_ANSWER_CHARS] + "..."


def triage(response: Any, reference: Any, task: Any = None) -> Grade | Pending:
    """A grade decided in-process, or the pair that needs the symbolic check."""
    if not isinstance(response, str) or not isinstance(reference, str):
        return Grade(correct=None, extracted=None, reason="bad-input")
    if len(response) > MAX_RESPONSE_CHARS or len(reference) > MAX_RESPONSE_CHARS:
        return Grade(correct=None, extracted=None, reason="blocked:response-too-long")
    if task is None:
        task = guess_task(reference)
    if task not in TASKS:
        return Grade(correct=None, extracted=None, reason="unknown-task")
    try:
        answer = reference_answer(reference)
        extracted = extract(response, task)
    except Exception as exc:  # defensive: extraction is linear string work and should never raise
        return Grade(correct=None, extracted=None, reason=f"extraction-error:{type(exc).__name__}")
    if extracted is None:
        return Grade(correct=None, extracted=None, reason="no-answer")
    if task == "sequence":
        ok = extracted.split() == (split_sequence(answer) or [answer])
        return Grade(correct=ok, extracted=extracted, reason="match" if ok else "mismatch")
    try:
        ok = decide(extracted, answer)
    except Blocked as exc:
        return Grade(correct=None, extracted=shown(extracted), reason=f"blocked:{exc.reason}")
    except Exception:  # Undecided, or anything unforeseen: the worker decides and never raises
        return Pending(extracted, answer)
    return Grade(correct=ok, extracted=extracted, reason="match" if ok else "mismatch")


class Grader:
    """Grades responses; owns a worker pool for symbolic checks (started on first need)."""

    def __init__(self, workers: int = 2, deadline_s: float = 2.0, memory_mb: int = 512):
        self.pool = WorkerPool(workers=workers, deadline_s=deadline_s, memory_mb=memory_mb)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()

    @property
    def counters(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._counts)
        counts["timeouts"] = self.pool.timeouts
        counts["worker_restarts"] = self.pool.restarts
        return counts

    def grade(self, response: str, reference: str, task: Task | None = None) -> Grade:
        return self.grade_many([(response, reference, task)])[0]

    def grade_many(self, items: Iterable[tuple[str, str, Task | None]]) -> list[Grade]:
        return self.resolve([triage(*item) for item in items])

    def resolve(self, first: list[Grade | Pending]) -> list[Grade]:
        """Completes triaged items: pending ones go to the worker pool in one batch."""
        waiting = [i for i, g in enumerate(first) if isinstance(g, Pending)]
        outcomes = self.pool.run([(first[i].extracted, first[i].reference) for i in waiting])
        grades: list[Grade] = list(first)  # type: ignore[arg-type]
        for i, (ok, reason) in zip(waiting, outcomes, strict=True):
            grades[i] = Grade(correct=ok, extracted=shown(first[i].extracted), reason=reason)
        self.count(grades, len(waiting))
        return grades

    def count(self, grades: list[Grade], symbolic: int) -> None:
        with self._lock:
            self._counts["graded"] += len(grades)
            self._counts["symbolic"] += symbolic
            for g in grades:
                key = "unparseable" if g.correct is None else "correct" if g.correct else "wrong"
                self._counts[key] += 1

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    global _default
    with _default_lock:
        if _default is None:
            _default = Grader()
            atexit.register(_default.close)
        return _default


def grade(response: str, reference: str, task: Task | None = None) -> Grade:
    """Grades one response; the fast path runs here, symbolic work in the module-level pool."""
    first = triage(response, reference, task)
    if isinstance(first, Grade):
        return first
    return default_grader().resolve([first])[0]


def grade_many(items: Iterable[tuple[str, str, Task | None]]) -> list[Grade]:
    return default_grader().grade_many(items)
