"""The progress lines a stage prints when its output is not a terminal (a log file, `kubectl logs`,
CI), and that `negrl run` relays: one line per period, never a redrawn bar.

    progress: sample 120/500 questions (24%) 2.1/s elapsed 57s ETA 3m01s | correct 41%

Pure formatting and timing decisions; the stages print.
"""

from __future__ import annotations

import os

PREFIX = "progress: "
DEFAULT_PERIOD_S = 30.0
PERIOD_ENV = "NEGRL_PROGRESS_EVERY_S"  # seconds between lines (tests and impatient users lower it)


def clock(seconds: float) -> str:
    """41s, 3m01s, 2h05m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_s(done: int, total: int, elapsed_s: float, start: int = 0) -> float | None:
    """Time left at the rate of this run (units done before it started, `start`, do not count)."""
    fresh = done - start
    if fresh <= 0 or elapsed_s <= 0:
        return None
    return (total - done) * elapsed_s / fresh


def progress_line(label: str, done: int, total: int, unit: str, elapsed_s: float, start: int = 0,
                  figures: str = "") -> str:
    percent = 100 * done / total if total else 100.0
    rate = (done - start) / elapsed_s if elapsed_s > 0 else 0.0
    eta = eta_s(done, total, elapsed_s, start)
    line = (f"{PREFIX}{label} {done}/{total} {unit} ({percent:.0f}%) {rate:.2g}/s elapsed {clock(elapsed_s)}"
            f" ETA {'?' if eta is None else clock(eta)}")
    return f"{line} | {figures}" if figures else line


def is_progress_line(line: str) -> bool:
    return line.startswith(PREFIX)


def period_s(environ: dict | None = None) -> float:
    value = (os.environ if environ is None else environ).get(PERIOD_ENV, "")
    try:
        return max(0.0, float(value)) if value.strip() else DEFAULT_PERIOD_S
    except ValueError:
        return DEFAULT_PERIOD_S


class Throttle:
    """Says when a line is due: the first call, the last unit, and then once per period."""

    def __init__(self, period: float):
        self.period, self.last = period, None

    def due(self, now: float, finished: bool = False) -> bool:
        if finished or self.last is None or now - self.last >= self.period:
            self.last = now
            return True
        return False
