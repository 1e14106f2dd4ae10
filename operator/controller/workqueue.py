"""The reconcile queue: experiment keys due now or later, each reconciled by one worker at a time.

Like controller-runtime's work queue: adding a key that is already due earlier changes nothing
(events coalesce), a key added while its reconcile runs is reconciled again right after, and the
handler's return value (seconds) schedules the key's next reconcile: the plan's `requeue_after`, a
back-off after an error, or the slow safety-net interval. Child watch events add keys, so progress
follows events, not the interval.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger("negrl.operator")


def retry_delay(failures: int, base_s: float = 0.5, cap_s: float = 300.0) -> float:
    """Exponential back-off after `failures` consecutive failed reconciles: base, 2 base, 4 base, ..., cap."""
    if failures <= 0:
        return 0.0
    return min(cap_s, base_s * 2 ** min(failures - 1, 30))


class WorkQueue:
    """`handler(key) -> seconds | None` runs on `workers` threads; None: no reconcile scheduled."""

    def __init__(self, handler: Callable[[Hashable], float | None], workers: int = 8,
                 clock: Callable[[], float] = time.monotonic):
        self.handler, self.clock = handler, clock
        self.lock = threading.Condition()
        self.heap: list[tuple[float, int, Hashable]] = []
        self.due: dict[Hashable, float] = {}  # key -> when its next reconcile is due
        self.running: set[Hashable] = set()
        self.again: set[Hashable] = set()  # added while running: reconcile once more right after
        self.sequence = itertools.count()
        self.stopped = False
        self.threads = [threading.Thread(target=self._work, name=f"reconcile-{n}", daemon=True) for n in range(workers)]
        for thread in self.threads:
            thread.start()

    def add(self, key: Hashable, delay_s: float = 0.0) -> None:
        with self.lock:
            if key in self.running and delay_s <= 0:
                self.again.add(key)
                return
            when = self.clock() + max(delay_s, 0.0)
            if key in self.due and self.due[key] <= when:
                return
            self.due[key] = when
            heapq.heappush(self.heap, (when, next(self.sequence), key))
            self.lock.notify()

    def forget(self, key: Hashable) -> None:
        with self.lock:
            self.due.pop(key, None)
            self.again.discard(key)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            self.lock.notify_all()

    def pending(self) -> int:
        with self.lock:
            return len(self.due)

    def _next(self) -> Hashable | None:
        """The next key due and not running (blocks); None once stopped."""
        with self.lock:
            while not self.stopped:
                while self.heap and self.due.get(self.heap[0][2]) != self.heap[0][0]:
                    heapq.heappop(self.heap)  # superseded by an earlier due time, or forgotten
                if self.heap and self.heap[0][0] <= self.clock():
                    when, _, key = heapq.heappop(self.heap)
                    del self.due[key]
                    if key in self.running:
                        self.again.add(key)
                        continue
                    self.running.add(key)
                    return key
                self.lock.wait(None if not self.heap else max(self.heap[0][0] - self.clock(), 0.001))
            return None

    def _work(self) -> None:
        while (key := self._next()) is not None:
            try:
                delay = self.handler(key)
            except Exception:  # noqa: BLE001 (the handler maps its errors; this keeps the worker alive)
                log.exception("reconcile of %s raised", key)
                delay = retry_delay(1)
            with self.lock:
                self.running.discard(key)
                repeat = key in self.again
                self.again.discard(key)
            if repeat:
                self.add(key)
            elif delay is not None:
                self.add(key, delay)
