"""``negrl grade [FILE]``: grade JSONL responses against references.

Each input line is a JSON object with ``response``, ``answer`` and optional ``task`` (``gsm8k``,
``math``, ``sequence``; guessed from the answer when absent). Each output line is the same object
with ``correct`` (true/false/null), ``extracted`` and ``reason`` added. A line that is not a JSON
object comes out as ``{"correct": null, "extracted": null, "reason": "bad-line"}`` so output lines
stay aligned with input lines. A summary line goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO

from negrl_sampler.grading.grader import Grader

BATCH = 256


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="negrl grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help="JSONL input (`-` or none: stdin)")
    parser.add_argument("--workers", type=int, default=2, help="symbolic worker processes")
    parser.add_argument("--deadline", type=float, default=2.0, help="seconds per symbolic check")
    parser.add_argument("--memory-mb", type=int, default=512, help="address-space cap per worker")
    return parser.parse_args(argv)


def batches(lines: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        if line.strip():
            batch.append(line)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def record_of(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def grade_batch(grader: Grader, lines: list[str]) -> list[dict]:
    records = [record_of(line) for line in lines]
    items = [
        (r.get("response"), r.get("answer"), r.get("task")) if r is not None else (None, None, None)
        for r in records
    ]
    grades = grader.grade_many(items)
    out = []
    for record, g in zip(records, grades, strict=True):
        if record is None:
            out.append({"correct": None, "extracted": None, "reason": "bad-line"})
        else:
            out.append({**record, "correct": g.correct, "extracted": g.extracted, "reason": g.reason})
    return out


def run(source: IO[str], sink: IO[str], grader: Grader) -> None:
    for batch in batches(source):
        for record in grade_batch(grader, batch):
            sink.write(json.dumps(record) + "\n")
        sink.flush()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # opened before the worker pool starts, so a wrong path fails at once (`-` or none: stdin)
    source = open(args.file, encoding="utf-8", errors="replace") if args.file not in (None, "-") else sys.stdin
    with source, Grader(workers=args.workers, deadline_s=args.deadline, memory_mb=args.memory_mb) as grader:
        run(source, sys.stdout, grader)
        counts = grader.counters
    print(" ".join(f"{k}={v}" for k, v in counts.items()), file=sys.stderr)
    return 0
