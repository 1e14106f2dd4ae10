"""A pool of worker processes for symbolic checks, with hard deadlines and memory caps.

Workers come from the ``forkserver`` context (safe when the caller has threads), preloaded with
``negrl_sampler.grading.symbolic`` so a replacement starts in milliseconds. Each worker caps its own address
space with ``RLIMIT_AS``. The parent waits for each job at most ``deadline_s``; a worker that misses
its deadline is killed (SIGKILL) and replaced, and the job's outcome is ``(None, "timeout")``. A worker
that dies (e.g. a C-level allocation failure) gives ``(None, "worker-died")`` and is replaced. The
pool is thread-safe: concurrent ``run`` calls share the workers.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait

Job = tuple[str, str]
Outcome = tuple[bool | None, str]

PRELOAD = ["negrl_sampler.grading.symbolic"]


def worker_main(conn: Connection, memory_mb: int) -> None:
    """Body of a worker process: judge jobs from ``conn`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from negrl_sampler.grading.symbolic import judge

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            outcome = judge(*job)
        except MemoryError:
            outcome = (None, "blocked:memory")
        conn.send(outcome)


class Worker:
    def __init__(self, context, memory_mb: int):
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=worker_main, args=(child, memory_mb), daemon=True)
        self.process.start()
        child.close()

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                self.process.kill()
        self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2.0)
        self.conn.close()


class WorkerPool:
    def __init__(self, workers: int = 2, deadline_s: float = 2.0, memory_mb: int = 512):
        if workers < 1 or deadline_s <= 0:
            raise ValueError("workers must be >= 1 and deadline_s > 0")
        self.size, self.deadline_s, self.memory_mb = workers, deadline_s, memory_mb
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.idle: list[Worker] = []
        self.started = 0
        self.condition = threading.Condition()
        self.timeouts = 0
        self.restarts = 0
        self.closed = False

    def checkout(self, want: int) -> list[Worker]:
        with self.condition:
            while not self.idle and self.started >= self.size:
                if self.closed:
                    raise RuntimeError("worker pool is closed")
                self.condition.wait()
            taken = self.idle[:want]
            del self.idle[:want]
            new = min(want - len(taken), self.size - self.started)
            self.started += new
        return taken + [Worker(self.context, self.memory_mb) for _ in range(new)]

    def checkin(self, workers: list[Worker]) -> None:
        with self.condition:
            if self.closed:
                for worker in workers:
                    worker.stop(kill=False)
                return
            self.idle.extend(workers)
            self.condition.notify_all()

    def replace(self, worker: Worker) -> Worker:
        worker.stop(kill=True)
        with self.condition:
            self.restarts += 1
        return Worker(self.context, self.memory_mb)

    def run(self, jobs: list[Job]) -> list[Outcome]:
        """Outcomes of ``jobs`` in order, each within ``deadline_s`` of being handed to a worker."""
        if not jobs:
            return []
        workers = self.checkout(min(len(jobs), self.size))
        try:
            return self.schedule(jobs, workers)
        finally:
            self.checkin(workers)

    def schedule(self, jobs: list[Job], workers: list[Worker]) -> list[Outcome]:
        results: list[Outcome] = [(None, "not-run")] * len(jobs)
        pending = deque(range(len(jobs)))
        free = list(range(len(workers)))
        busy: dict[Connection, tuple[int, int, float]] = {}
        while pending or busy:
            while pending and free:
                slot, index = free.pop(), pending.popleft()
                workers[slot] = self.send(workers[slot], jobs[index])
                busy[workers[slot].conn] = (slot, index, time.monotonic() + self.deadline_s)
            soonest = min(deadline for _, _, deadline in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, soonest - time.monotonic())):
                slot, index, _ = busy.pop(conn)
                try:
                    results[index] = conn.recv()
                except (EOFError, OSError):
                    results[index] = (None, "worker-died")
                    workers[slot] = self.replace(workers[slot])
                free.append(slot)
            now = time.monotonic()
            for conn, (slot, index, deadline) in list(busy.items()):
                if deadline <= now:
                    del busy[conn]
                    results[index] = (None, "timeout")
                    with self.condition:
                        self.timeouts += 1
                    workers[slot] = self.replace(workers[slot])
                    free.append(slot)
        return results

    def send(self, worker: Worker, job: Job) -> Worker:
        """Sends ``job``, replacing a worker that died while idle."""
        if not worker.process.is_alive():
            worker = self.replace(worker)
        try:
            worker.conn.send(job)
        except OSError:
            worker = self.replace(worker)
            worker.conn.send(job)
        return worker

    def close(self) -> None:
        with self.condition:
            self.closed = True
            idle, self.idle = self.idle, []
            self.condition.notify_all()
        for worker in idle:
            worker.stop(kill=False)
