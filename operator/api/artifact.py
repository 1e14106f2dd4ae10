"""Stage artifacts on disk: record shards, shard manifests and the stage manifest.

Layout of one stage folder:
    records-00000-of-00004.jsonl     one JSON record per line, appended and flushed per unit of work
    manifest-00000-of-00004.json     written atomically when shard 0 of 4 is complete
    manifest.json                    written atomically once every shard manifest exists

A stage is done iff manifest.json exists and records the same inputs hash as the config asking.
Readers never see a half-written record: a torn last line (a crash mid-write) is cut on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MANIFEST = "manifest.json"
TRAIN_LOG = "train_log.jsonl"  # a training stage's per-step records, one JSON object a line
# Fields that say where or how a stage runs, not what it computes (a sampler's URL changes
# with every local run; the policy it serves is fixed by the graph; tracking says where curves go).
NON_INPUT_FIELDS = {"shard_index", "shard_count", "metrics_port", "experiment", "server", "tracking"}


def inputs_hash(config: BaseModel) -> str:
    data = config.model_dump(mode="json", exclude=NON_INPUT_FIELDS)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


ARTIFACT_MODE = 0o644  # samplers and trainers may run as other users than the stage that wrote it


def temporary_beside(path: Path) -> tuple[int, str]:
    """An open temporary file next to `path` (to rename onto it), readable by every user: mkstemp's
    own 0600 would hide an artifact from pods running as another uid."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(descriptor, ARTIFACT_MODE)
    return descriptor, temporary


def share_readable(folder: str | Path) -> None:
    """Let every user read a written folder (a model): whatever umask or library wrote it."""
    for path in [Path(folder), *Path(folder).rglob("*")]:
        extra = 0o555 if path.is_dir() else 0o444
        path.chmod(path.stat().st_mode | extra)


def write_json_atomic(path: str | Path, payload: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = temporary_beside(path)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def shard_records_path(stage_dir: str | Path, index: int, count: int) -> Path:
    return Path(stage_dir) / f"records-{index:05d}-of-{count:05d}.jsonl"


def shard_manifest_path(stage_dir: str | Path, index: int, count: int) -> Path:
    return Path(stage_dir) / f"manifest-{index:05d}-of-{count:05d}.json"


def stage_manifest(stage_dir: str | Path) -> dict | None:
    path = Path(stage_dir) / MANIFEST
    return read_json(path) if path.exists() else None


def stage_done(stage_dir: str | Path, expected_hash: str | None = None) -> bool:
    manifest = stage_manifest(stage_dir)
    return manifest is not None and (expected_hash is None or manifest.get("inputs_hash") == expected_hash)


def shard_done(stage_dir: str | Path, index: int, count: int, expected_hash: str) -> bool:
    path = shard_manifest_path(stage_dir, index, count)
    return path.exists() and read_json(path).get("inputs_hash") == expected_hash


def merge_summaries(summaries: list[dict]) -> dict:
    """Numbers add up across shards; anything else is taken from the first shard."""
    merged: dict = {}
    for summary in summaries:
        for key, value in summary.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    return merged


def finish_shard(stage_dir: str | Path, index: int, count: int, inputs: str, summary: dict,
                 before_manifest: Callable[[dict], None] | None = None) -> dict | None:
    """Record shard `index` as complete; when all shards are, write the stage manifest and return it.
    `before_manifest` gets the merged summary first (what must exist once the stage counts as done)."""
    write_json_atomic(shard_manifest_path(stage_dir, index, count), {"inputs_hash": inputs, "summary": summary})
    paths = [shard_manifest_path(stage_dir, other, count) for other in range(count)]
    if not all(path.exists() for path in paths):
        return None
    shards = [read_json(path) for path in paths]
    if any(shard["inputs_hash"] != inputs for shard in shards):
        return None
    manifest = {
        "inputs_hash": inputs,
        "shards": count,
        "records": [shard_records_path(stage_dir, i, count).name for i in range(count)],
        "summary": merge_summaries([shard["summary"] for shard in shards]),
    }
    if before_manifest is not None:
        before_manifest(manifest["summary"])
    write_json_atomic(Path(stage_dir) / MANIFEST, manifest)
    return manifest


def read_records(stage_dir: str | Path) -> Iterator[dict]:
    """Every record of a finished stage, shard by shard, in file order."""
    manifest = stage_manifest(stage_dir)
    if manifest is None:
        raise FileNotFoundError(f"{stage_dir}: stage not finished (no {MANIFEST}); run that stage first")
    for name in manifest["records"]:
        yield from read_jsonl(Path(stage_dir) / name)


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path) as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


class RecordWriter:
    """Appends records to a shard file, resuming after a crash.

    On open, a torn last line is cut off; `existing` holds the complete records already there so the
    caller can skip the work they cover. Each `write_many` is flushed and fsynced as one unit.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.existing: list[dict] = self._recover()
        self._handle = open(self.path, "a")

    def _recover(self) -> list[dict]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]

    def write_many(self, records: list[dict]) -> None:
        self._handle.write("".join(json.dumps(record, sort_keys=True) + "\n" for record in records))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
