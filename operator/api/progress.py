"""Progress as plain log lines where no terminal shows a live bar (a pod's log, `kubectl logs`):
one line each time another tenth of the work is done, and one at the end."""

from __future__ import annotations

PARTS = 10


def progress_due(before: int, after: int, total: int, parts: int = PARTS) -> bool:
    """Whether going from `before` to `after` of `total` units crosses a 1/parts mark (or ends)."""
    if total <= 0 or after <= before:
        return False
    return after >= total or after * parts // total > before * parts // total


def progress_line(label: str, done: int, total: int, figures: str = "") -> str:
    percent = 100 * done // total if total else 100
    return f"{label}: {done}/{total} ({percent}%)" + (f" {figures}" if figures else "")
