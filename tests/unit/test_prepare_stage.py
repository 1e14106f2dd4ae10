import json

import pytest

from negrl_operator.api.artifact import stage_manifest
from negrl_operator.api.stage_config import PrepareStageConfig
from negrl_sampler.stages.prepare import prepare
from tests.fixtures.paths import GSM8K_DIR


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stargraph_source_writes_both_splits_and_is_idempotent(tmp_path):
    config = PrepareStageConfig(output_dir=str(tmp_path), task="sequence", train_size=7,
                                source={"kind": "stargraph", "degree": 2, "pathLength": 3, "nodes": 10,
                                        "trainSize": 50, "testSize": 4})
    assert prepare(config) == {"stage": "prepare", "train": 7, "test": 4}
    train, test = lines(tmp_path / "train.jsonl"), lines(tmp_path / "test.jsonl")
    assert [q["id"] for q in train] == [f"train-{i}" for i in range(7)]
    assert all(q["answer"] == q["solution"] for q in train)
    assert [q["id"] for q in test] == ["test-0", "test-1", "test-2", "test-3"]
    before = (tmp_path / "train.jsonl").stat().st_mtime_ns
    assert prepare(config)["train"] == 7
    assert (tmp_path / "train.jsonl").stat().st_mtime_ns == before
    assert stage_manifest(tmp_path)["records"] == ["train.jsonl", "test.jsonl"]


def test_gsm8k_source(tmp_path):
    config = PrepareStageConfig(
        output_dir=str(tmp_path), task="gsm8k", train_size=3,
        source={"kind": "gsm8k-jsonl", "trainPath": str(GSM8K_DIR / "train.jsonl"),
                "testPath": str(GSM8K_DIR / "test.jsonl")})
    summary = prepare(config)
    assert summary["train"] == 3 and summary["test"] == 1319
    first = lines(tmp_path / "train.jsonl")[0]
    assert first["answer"].endswith("#### 72") and "<<" not in first["solution"]


def test_missing_file_names_the_path(tmp_path):
    config = PrepareStageConfig(output_dir=str(tmp_path), task="gsm8k",
                                source={"kind": "gsm8k-jsonl", "trainPath": "/nope/train.jsonl",
                                        "testPath": "/nope/test.jsonl"})
    with pytest.raises(FileNotFoundError, match="/nope/train.jsonl"):
        prepare(config)
