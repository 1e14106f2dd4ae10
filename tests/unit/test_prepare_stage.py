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


def test_stargraph_validation_split_is_its_own_stream(tmp_path):
    config = PrepareStageConfig(output_dir=str(tmp_path), task="sequence",
                                source={"kind": "stargraph", "degree": 2, "pathLength": 3, "nodes": 10,
                                        "trainSize": 30, "testSize": 30, "validationSize": 30})
    assert prepare(config) == {"stage": "prepare", "train": 30, "test": 30, "validation": 30}
    splits = {name: lines(tmp_path / f"{name}.jsonl") for name in ("train", "test", "validation")}
    assert [q["id"] for q in splits["validation"]][:2] == ["validation-0", "validation-1"]
    questions = {name: [q["question"] for q in split] for name, split in splits.items()}
    assert questions["validation"] != questions["test"] and questions["validation"] != questions["train"]


def test_every_seed_gets_its_own_scratch_initialisation(tmp_path):
    from safetensors.numpy import load_file

    config = PrepareStageConfig(output_dir=str(tmp_path), task="sequence", scratch_seeds=[0, 2],
                                scratch_model={"hidden": 64, "layers": 1, "heads": 1, "maxPositions": 32},
                                source={"kind": "stargraph", "degree": 2, "pathLength": 3, "nodes": 10,
                                        "trainSize": 5, "testSize": 2})
    prepare(config)
    first, other = (load_file(tmp_path / name / "model.safetensors") for name in ("model", "model-s2"))
    assert first.keys() == other.keys()
    assert any((first[key] != other[key]).any() for key in first if key.endswith("proj.weight"))
    assert (tmp_path / "model" / "tokenizer.json").read_text() == (tmp_path / "model-s2" / "tokenizer.json").read_text()


def test_arithmetic_source_writes_disjoint_splits_and_a_tokenizer_with_one_token_per_number(tmp_path):
    from transformers import AutoTokenizer

    from negrl_sampler.grading.answer import reference_answer

    config = PrepareStageConfig(output_dir=str(tmp_path), task="arithmetic", train_size=40,
                                prompt={"template": "{question}\nAnswer:"},
                                scratch_model={"hidden": 64, "layers": 1, "heads": 1, "maxPositions": 160},
                                source={"kind": "arithmetic", "quantities": 3, "chainLength": 4, "maxValue": 30,
                                        "trainSize": 100, "testSize": 20, "validationSize": 10})
    assert prepare(config) == {"stage": "prepare", "train": 40, "test": 20, "validation": 10}
    splits = {name: lines(tmp_path / f"{name}.jsonl") for name in ("train", "test", "validation")}
    questions = {name: {q["question"] for q in split} for name, split in splits.items()}
    assert not questions["train"] & questions["test"] and not questions["train"] & questions["validation"]
    assert not questions["test"] & questions["validation"]
    first = splits["train"][0]
    assert first["answer"] == first["solution"] and len(first["solution"].splitlines()) == 5  # 4 events + ####
    assert reference_answer(first["answer"]).isdigit()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    for number in range(31):  # every number of the range is one known token
        ids = tokenizer(str(number), add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id
    text = f"{first['question']}\nAnswer: {first['solution']}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert len(ids) == len(text.split()) + first["solution"].count("\n") + 1  # words, and each line break
