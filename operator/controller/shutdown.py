"""The operator's graceful stop: SIGTERM or SIGINT sets one `stopping` Event, which is also kopf's
stop flag; then the reconcile workers drain, and only then is the Lease handed over.

kopf runs on a thread of its own, so it installs no signal handlers of its own (it does on the main
thread): ours stay, and kopf stops through the flag at once. (On the main thread, kopf's handlers
replaced ours, and its own stop left a task waiting on our flag, which kopf gave 5 s before it
cancelled it: 5 s more without a leader at every hand-off.) A container's PID 1 ignores SIGTERM
unless it handles it: without a handler a standby that was told to stop went on waiting for the
Lease, took it, and held it until the kubelet killed it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import kopf

from negrl_operator.controller.election import LeaderLease
from negrl_operator.controller.workqueue import WorkQueue

log = logging.getLogger("negrl.operator")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """`stopping` is set on the first SIGTERM/SIGINT (install() on the main thread)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()

    def install(self) -> Shutdown:
        for number in SIGNALS:
            signal.signal(number, self.on_signal)
        return self

    def on_signal(self, number: int, frame) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping", signal.Signals(number).name)
        self.stopping.set()


def run_kopf(shutdown: Shutdown, **operator_args) -> None:
    """kopf's operator (kopf.run's arguments) on a thread until `shutdown.stopping` is set; when kopf
    ends by itself (an error), `stopping` is set too and its error raised here."""
    errors: list[BaseException] = []

    def operate() -> None:
        try:
            asyncio.run(kopf.operator(stop_flag=shutdown.stopping, **operator_args))
        except asyncio.CancelledError:
            pass
        except BaseException as error:  # noqa: BLE001 (raised again on the main thread)
            errors.append(error)
        finally:
            shutdown.stopping.set()

    thread = threading.Thread(target=operate, name="kopf")
    thread.start()
    shutdown.stopping.wait()  # a signal's handler runs on this (the main) thread meanwhile
    thread.join()
    if errors:
        raise errors[0]


def hand_over(queue: WorkQueue | None, lease: LeaderLease | None, timeout_s: float) -> None:
    """After kopf stopped: drain the reconciles, then release the Lease so a standby leads at once.
    While a reconcile still runs the Lease is kept (it expires): two replicas never reconcile together."""
    drained = drain(queue, timeout_s)
    if lease is None:
        return
    if drained:
        lease.release()
    else:
        log.warning("a reconcile still runs after %.0fs: the Lease is left to expire", timeout_s)


def drain(queue: WorkQueue | None, timeout_s: float) -> bool:
    """Hand out no more reconciles and wait for the running ones; True when none runs any more."""
    if queue is None:
        return True
    queue.stop()
    deadline = time.monotonic() + timeout_s
    for thread in queue.threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in queue.threads)
