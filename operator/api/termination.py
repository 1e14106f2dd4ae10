"""The one-line JSON summary every stage prints at exit and leaves as its Kubernetes termination
message, which the operator copies into the experiment's status; and how long texts in it (an
error, a log tail) are shortened without losing their head."""

from __future__ import annotations

import json
import os
from pathlib import Path

TERMINATION_LOG = "/dev/termination-log"
MAX_BYTES = 4096  # the kubelet keeps at most 4 KiB of a termination message
ERROR_CHARS = 1024  # an error in a summary or a stage message: head (type and message) + tail
CUT = " […] "


def shorten(text: str, limit: int = ERROR_CHARS) -> str:
    """`text` within `limit` characters: its head (an exception's type and message come first) and
    a shorter tail (where a command's own error line ends), joined by a visible cut mark."""
    text = text.strip()
    if len(text) <= limit:
        return text
    room = max(0, limit - len(CUT))
    head = room - room // 3
    return text[:head].rstrip() + CUT + text[len(text) - (room - head):].lstrip()


def _dumps(summary: dict) -> str:
    return json.dumps(summary, sort_keys=True, separators=(",", ":"))


def summary_line(summary: dict) -> str:
    """The summary as one JSON line of at most MAX_BYTES bytes that always parses: when too long,
    the error is shortened, then only numbers and short strings are kept, then the error shrinks."""
    line = _dumps(summary)
    if len(line.encode()) <= MAX_BYTES:
        return line
    kept = {k: v for k, v in summary.items()
            if isinstance(v, int | float | bool) or (isinstance(v, str) and (k in {"stage", "error"} or len(v) <= 256))}
    if isinstance(kept.get("error"), str):
        kept["error"] = shorten(kept["error"])
    limit = ERROR_CHARS
    while len((line := _dumps(kept)).encode()) > MAX_BYTES:
        if isinstance(kept.get("error"), str) and limit > 64:
            limit //= 2
            kept["error"] = shorten(kept["error"], limit)
        else:  # still too long: drop the longest value other than the stage and the error
            rest = [k for k in kept if k not in {"stage", "error"}]
            if not rest:
                kept = {k: shorten(str(v), 256) for k, v in kept.items()}
                return _dumps(kept)
            kept.pop(max(rest, key=lambda k: len(_dumps({k: kept[k]}))))
    return line


def report_summary(summary: dict, path: str | None = None) -> str:
    """Print the summary line to stdout and write it to the termination-message path when it exists."""
    line = summary_line(summary)
    print(line, flush=True)
    target = Path(path or os.environ.get("NEGRL_TERMINATION_LOG", TERMINATION_LOG))
    if target.parent.exists() and (target.exists() or path is not None or "NEGRL_TERMINATION_LOG" in os.environ):
        target.write_text(line)
    return line
