"""A finished stage kept by content, so `negrl run` does it once per machine (the pretrained base).

The key is the stage's config with the run's own artifact root written as `<root>`, plus the bytes of
every file the stage reads and of the code that runs it (a changed generator, tokenizer or trainer
misses). An entry is the stage's folder and its one-line summary, moved into place whole: a reader
sees a complete entry or none. A stage restored from the cache gets a manifest with this run's inputs
hash, so the run treats it as finished here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel

from negrl_operator.api.artifact import MANIFEST, NON_INPUT_FIELDS, inputs_hash, read_json, write_json_atomic

SUMMARY = "summary.json"
STAGE = "stage"


def cache_dir() -> Path:
    """${NEGRL_CACHE_DIR:-~/.cache/negrl}/stages, beside the Go builds and images of the tests."""
    return Path(os.environ.get("NEGRL_CACHE_DIR", Path.home() / ".cache" / "negrl")) / "stages"


def file_digests(paths: list[Path]) -> list[tuple[str, str]]:
    """(name relative to its input, sha256) of every file under each input path, in a fixed order."""
    digests = []
    for index, path in enumerate(paths):
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if path.is_dir() else [path]
        for file in files:
            name = f"{index}/{file.relative_to(path)}" if path.is_dir() else f"{index}"
            digests.append((name, hashlib.sha256(file.read_bytes()).hexdigest()))
    return digests


def cache_key(config: BaseModel, root: str, digests: list[tuple[str, str]]) -> str:
    """What the stage computes from: its config (without run-local fields, with paths made relative
    to the artifact root) and the contents of what it reads."""
    settings = json.dumps(config.model_dump(mode="json", exclude=NON_INPUT_FIELDS), sort_keys=True)
    payload = json.dumps([settings.replace(root, "<root>"), digests])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def restore(key: str, stage_dir: Path, config: BaseModel) -> dict | None:
    """Copy a cached stage into `stage_dir` (replacing a half-done run of it) and return its summary;
    None: a miss."""
    entry = cache_dir() / key
    if not (entry / STAGE / MANIFEST).exists():
        return None
    partial = stage_dir.with_name(f".{stage_dir.name}.restoring")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(entry / STAGE, partial)
    manifest = read_json(partial / MANIFEST)
    write_json_atomic(partial / MANIFEST, {**manifest, "inputs_hash": inputs_hash(config)})
    shutil.rmtree(stage_dir, ignore_errors=True)  # a half-done run of the stage: the cache has all of it
    partial.rename(stage_dir)
    return read_json(entry / SUMMARY)


def store(key: str, stage_dir: Path, summary: dict) -> Path:
    """Keep a finished stage under its key (a concurrent store of the same key keeps the first)."""
    entry = cache_dir() / key
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
    shutil.copytree(stage_dir, staging / STAGE)
    write_json_atomic(staging / SUMMARY, summary)
    try:
        staging.rename(entry)
    except OSError:  # already there: another run stored the same key first
        shutil.rmtree(staging)
    return entry
