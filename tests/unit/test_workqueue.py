"""The reconcile queue: coalescing, one reconcile per key at a time, requeue delays and back-off."""

from __future__ import annotations

import threading
import time

import pytest

from negrl_operator.controller.workqueue import WorkQueue, retry_delay


@pytest.mark.parametrize(("failures", "delay"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (10, 256.0),
                                                 (11, 300.0), (1000, 300.0)])
def test_retry_delay_doubles_up_to_the_cap(failures, delay):
    assert retry_delay(failures) == delay


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_events_for_a_queued_key_coalesce_into_one_reconcile():
    seen, gate = [], threading.Event()
    queue = WorkQueue(lambda key: (gate.wait(), seen.append(key))[-1] and None, workers=2)
    queue.add("blocker")
    wait_until(lambda: "blocker" in queue.running)
    queue.add("a", 0.05)
    for _ in range(5):
        queue.add("a", 0.05)
    gate.set()
    wait_until(lambda: seen.count("a") == 1)
    time.sleep(0.2)
    assert seen.count("a") == 1
    queue.stop()


def test_a_key_added_while_it_runs_runs_again_after_never_in_parallel():
    running, overlaps, calls = set(), [], []
    release = threading.Event()

    def handler(key):
        overlaps.append(key in running)
        running.add(key)
        calls.append(key)
        if len(calls) == 1:
            release.wait(2)
        running.discard(key)
        return None

    queue = WorkQueue(handler, workers=4)
    queue.add("x")
    wait_until(lambda: calls)
    queue.add("x")  # a child event during the reconcile
    queue.add("x")
    release.set()
    wait_until(lambda: len(calls) == 2)
    time.sleep(0.2)
    assert calls == ["x", "x"] and overlaps == [False, False]
    queue.stop()


def test_the_handlers_delay_schedules_the_next_reconcile_and_an_event_comes_first():
    times: list[float] = []
    queue = WorkQueue(lambda key: (times.append(time.monotonic()), 30.0)[1], workers=1)
    queue.add("k")
    wait_until(lambda: len(times) == 1)
    assert queue.pending() == 1  # the safety net, 30 s away
    queue.add("k")  # an event: now, not in 30 s
    wait_until(lambda: len(times) == 2)
    assert times[1] - times[0] < 1.0
    queue.forget("k")
    assert queue.pending() == 0
    queue.stop()


def test_a_handler_that_raises_is_retried_with_back_off():
    calls: list[float] = []

    def handler(key):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("boom")
        return None

    queue = WorkQueue(handler, workers=1)
    queue.add("k")
    wait_until(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= retry_delay(1) - 0.01
    queue.stop()
