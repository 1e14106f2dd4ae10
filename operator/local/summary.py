"""The one-line summaries `negrl run`'s stage commands leave under `<workdir>/logs/`: where each goes,
and a stage's summary read back (of a sharded stage, its shards' merged as the operator merges a
sharded Job's)."""

from __future__ import annotations

import json
from pathlib import Path

from negrl_operator.api.artifact import stage_manifest
from negrl_operator.reconcile.result import merged_shards


def summary_path(workdir: Path, name: str) -> Path:
    """Where the command run as `name` (a stage, or `<stage>-shard-<i>`) writes its summary."""
    return workdir / "logs" / f"{name}.summary.json"


def read_summary(workdir: Path, name: str) -> dict:
    """The summary a command left (also for stages finished by an earlier run); {} when none."""
    path = summary_path(workdir, name)
    return json.loads(path.read_text()) if path.exists() else {}


def shard_summaries(workdir: Path, name: str) -> list[Path]:
    """The summaries the shards of stage `name` left, in shard order."""
    return sorted(workdir.glob(f"logs/{name}-shard-*.summary.json"),
                  key=lambda path: int(path.name.removesuffix(".summary.json").rsplit("-", 1)[1]))


def stage_summary(workdir: Path, name: str, kind: str) -> dict:
    """A stage's summary; of a sharded one, its shards' merged, complete once the last shard wrote
    the stage's manifest."""
    shards = shard_summaries(workdir, name)
    if not shards:
        return read_summary(workdir, name)
    merged = merged_shards(kind, [json.loads(path.read_text()) for path in shards])
    return {**merged, "complete": stage_manifest(workdir / "artifacts" / name) is not None}
