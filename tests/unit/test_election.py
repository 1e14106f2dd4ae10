"""Leader election's decision table, the records it writes, and the graceful stop around it
(signals set one Event; draining waits for running reconciles)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from negrl_operator.controller.election import (
    RELEASED_DURATION_S,
    Action,
    LeaseRecord,
    Timing,
    decide,
    lease_spec,
    micro_time,
    record_of,
    written,
)
from negrl_operator.controller.shutdown import Shutdown, drain
from negrl_operator.controller.workqueue import WorkQueue

ME, OTHER = "negrl-abc-1", "negrl-xyz-1"
T0, T1 = "2026-12-06T13:00:00.000000Z", "2026-12-06T13:00:07.250000Z"
HELD = LeaseRecord(OTHER, 15, T0, T0, 3)
MINE = LeaseRecord(ME, 15, T0, T0, 3)
RELEASED = LeaseRecord("", RELEASED_DURATION_S, T0, T0, 3)


@pytest.mark.parametrize(("record", "unchanged_s", "leading", "stopping", "action"), [
    (None, 0.0, False, False, Action.CREATE),  # no Lease yet
    (HELD, 0.0, False, False, Action.WAIT),  # another replica renews it
    (HELD, 14.9, False, False, Action.WAIT),  # unchanged, but not for its whole duration
    (HELD, 15.0, False, False, Action.ACQUIRE),  # its holder stopped renewing: expired
    (RELEASED, 0.0, False, False, Action.ACQUIRE),  # handed over: take it at once, no waiting for expiry
    (LeaseRecord("", 15, T0, T0, 0), 0.0, False, False, Action.ACQUIRE),  # an empty holder is free whatever the duration
    (MINE, 0.0, True, False, Action.RENEW),
    (MINE, 0.0, False, False, Action.RENEW),  # this pod's restarted container (same identity): already ours
    (HELD, 0.0, True, False, Action.LOST),  # I led, and someone else holds it now
    (HELD, 30.0, True, False, Action.LOST),  # ... even when that record looks expired
    (RELEASED, 0.0, True, False, Action.LOST),
    (MINE, 0.0, True, True, Action.RELEASE),  # stopping leader hands it over
    (MINE, 0.0, False, True, Action.RELEASE),
    (RELEASED, 0.0, False, True, Action.STOP),  # stopping standby: never takes it, even a free one
    (HELD, 60.0, False, True, Action.STOP),  # ... nor an expired one
    (None, 0.0, False, True, Action.STOP),  # ... nor creates it
])
def test_decide(record, unchanged_s, leading, stopping, action):
    assert decide(record, unchanged_s, ME, leading, stopping) == action


@pytest.mark.parametrize(("action", "record", "expected"), [
    (Action.CREATE, None, LeaseRecord(ME, 15, T1, T1, 0)),
    (Action.ACQUIRE, HELD, LeaseRecord(ME, 15, T1, T1, 4)),  # a transition
    (Action.ACQUIRE, RELEASED, LeaseRecord(ME, 15, T1, T1, 4)),
    (Action.RENEW, MINE, LeaseRecord(ME, 15, T0, T1, 3)),  # acquired stays, renewed moves
    (Action.RENEW, LeaseRecord(ME, 1, T0, T0, 3), LeaseRecord(ME, 15, T0, T1, 3)),  # its duration comes back
    (Action.RELEASE, MINE, LeaseRecord("", 1, T1, T1, 3)),  # client-go's ReleaseOnCancel record
])
def test_written(action, record, expected):
    assert written(action, record, ME, T1, 15) == expected


@pytest.mark.parametrize("action", [Action.WAIT, Action.LOST, Action.STOP])
def test_decisions_that_write_nothing(action):
    with pytest.raises(ValueError, match=f"{action} writes nothing"):
        written(action, HELD, ME, T1, 15)


def test_lease_spec_round_trips_and_a_missing_holder_reads_as_released():
    assert lease_spec(MINE) == {"holderIdentity": ME, "leaseDurationSeconds": 15, "acquireTime": T0,
                                "renewTime": T0, "leaseTransitions": 3}
    assert record_of(lease_spec(MINE)) == MINE
    assert record_of({"holderIdentity": None, "leaseDurationSeconds": 1}) == LeaseRecord("", 1, "", "", 0)
    assert record_of(None) == LeaseRecord("", RELEASED_DURATION_S, "", "", 0)


def test_micro_time_is_the_api_servers_format_in_utc():
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 12, 6, 15, 0, 7, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert micro_time(moment) == T1


@pytest.mark.parametrize(("duration_s", "renew_s", "deadline_s", "request_s"), [
    (15, 3.0, 10.0, 10 / 3), (3, 0.6, 2.0, 1.0), (1, 0.5, 2 / 3, 1.0)])
def test_timing(duration_s, renew_s, deadline_s, request_s):
    timing = Timing(duration_s)
    assert (timing.renew_s, timing.deadline_s, timing.request_timeout_s, timing.retry_s) == (
        renew_s, pytest.approx(deadline_s), pytest.approx(request_s), 1.0)


def test_sigterm_sets_stopping_while_the_main_thread_waits_for_it():
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        shutdown = Shutdown().install()
        assert not shutdown.stopping.is_set()
        sender = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
        sender.start()  # from another thread, as the kubelet's signal arrives while kopf runs on its own
        started = time.monotonic()
        assert shutdown.stopping.wait(10)  # the handler runs on this thread, inside the wait
        assert time.monotonic() - started < 5
        os.kill(os.getpid(), signal.SIGINT)  # a second signal: still stopping, not a KeyboardInterrupt
        assert shutdown.stopping.is_set()
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_drain_waits_for_the_running_reconcile_only():
    started, release, handled = threading.Event(), threading.Event(), []

    def handler(key):
        handled.append(key)
        started.set()
        release.wait(10)
        return None

    queue = WorkQueue(handler, workers=2)
    queue.add("a")
    assert started.wait(5)
    queue.add("b", delay_s=0.3)  # due after the stop: never handed out
    assert drain(queue, timeout_s=0.5) is False  # "a" still runs
    release.set()
    assert drain(queue, timeout_s=5) is True
    assert handled == ["a"]
    assert drain(None, timeout_s=0) is True
