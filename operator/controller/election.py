"""Leader election: of several operator replicas only the holder of a coordination.k8s.io Lease runs.

The kubernetes client's LeaderElection (the Lease lock client-go uses) runs on a daemon thread:
`elect` blocks until this replica holds the Lease; if it later fails to renew it, the process exits
at once, so two replicas never reconcile together, and Kubernetes restarts it as a follower.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger("negrl.operator")
LOST_LEASE_EXIT = 75  # EX_TEMPFAIL: restart me


def identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"


def elect(name: str, namespace: str, lease_duration_s: float = 15.0) -> None:
    """Return once this process leads; exit the process when it stops leading."""
    leading = threading.Event()
    me = identity()

    def stopped() -> None:
        log.error("lost the Lease %s/%s: exiting so that only one replica reconciles", namespace, name)
        logging.shutdown()
        os._exit(LOST_LEASE_EXIT)  # the kopf loop must not outlive the lease, and it runs on the main thread

    config = electionconfig.Config(
        LeaseLock(name, namespace, me), lease_duration=int(lease_duration_s),
        renew_deadline=max(1, int(lease_duration_s * 2 / 3)), retry_period=max(1, int(lease_duration_s / 5)),
        onstarted_leading=leading.set, onstopped_leading=stopped,
    )
    log.info("%s waits for the Lease %s/%s", me, namespace, name)
    threading.Thread(target=leaderelection.LeaderElection(config).run, name="leader-election", daemon=True).start()
    leading.wait()
    log.info("%s leads (Lease %s/%s)", me, namespace, name)
