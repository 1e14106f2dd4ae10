"""The one-line JSON summary every stage prints at exit and leaves as its Kubernetes termination
message, which the operator copies into the experiment's status."""

from __future__ import annotations

import json
import os
from pathlib import Path

TERMINATION_LOG = "/dev/termination-log"
MAX_BYTES = 4096  # the kubelet keeps at most 4 KiB of a termination message


def summary_line(summary: dict) -> str:
    line = json.dumps(summary, sort_keys=True, separators=(",", ":"))
    if len(line.encode()) > MAX_BYTES:
        kept = {k: v for k, v in summary.items() if isinstance(v, int | float | bool) or k in {"stage", "error"}}
        line = json.dumps(kept, sort_keys=True, separators=(",", ":"))[:MAX_BYTES]
    return line


def report_summary(summary: dict, path: str | None = None) -> str:
    """Print the summary line to stdout and write it to the termination-message path when it exists."""
    line = summary_line(summary)
    print(line, flush=True)
    target = Path(path or os.environ.get("NEGRL_TERMINATION_LOG", TERMINATION_LOG))
    if target.parent.exists() and (target.exists() or path is not None or "NEGRL_TERMINATION_LOG" in os.environ):
        target.write_text(line)
    return line
