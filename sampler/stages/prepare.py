"""`negrl prepare`: materialise the train and test questions files of an experiment."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from negrl_operator.api.artifact import MANIFEST, inputs_hash, stage_done, stage_manifest, write_json_atomic
from negrl_operator.api.stage_config import (
    PREPARED_TEST,
    PREPARED_TRAIN,
    STAGE_CONFIG_PATH,
    PrepareStageConfig,
    load_stage_config,
)
from negrl_operator.api.termination import report_summary
from negrl_sampler.dataset import read_source, write_questions
from negrl_sampler.stargraph import star_graph_questions


def splits(config: PrepareStageConfig):
    """(train, test) question iterators for the configured source."""
    source = config.source
    if source.kind == "stargraph":
        train_count = min(source.train_size, config.train_size or source.train_size)
        shape = (source.degree, source.path_length, source.nodes)
        # distinct streams: the test split never replays the training generator
        return (star_graph_questions(train_count, *shape, seed=source.seed, prefix="train"),
                star_graph_questions(source.test_size, *shape, seed=source.seed + 1_000_003, prefix="test"))
    for path in (source.train_path, source.test_path):
        if not Path(path).exists():
            raise FileNotFoundError(f"data source file {path} does not exist (spec.data.source)")
    return (read_source(source.train_path, source.kind, "train", config.train_size),
            read_source(source.test_path, source.kind, "test"))


def build_base_model(config: PrepareStageConfig, out: Path) -> None:
    """The from-scratch base model: word tokens for `sequence` tasks, BPE on the training text otherwise."""
    from negrl_trainer.scratch_model import build_scratch_model

    questions = [q for name in (PREPARED_TRAIN, PREPARED_TEST)
                 for q in read_source(out / name, "questions-jsonl", name)]
    texts = [text for q in questions for text in (q["question"], q["solution"] or q["answer"])]
    shape = config.scratch_model.model_dump(by_alias=False, exclude={"seed"})
    words = None
    if config.task == "sequence":
        words = {word for text in [*texts, config.prompt.template.replace("{question}", " ")] for word in text.split()}
    shutil.rmtree(out / "model.tmp", ignore_errors=True)
    build_scratch_model(out / "model.tmp", texts, words=words, seed=config.scratch_model.seed, **shape)
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    (out / "model.tmp").rename(out / "model")


def prepare(config: PrepareStageConfig) -> dict:
    out = Path(config.output_dir)
    expected = inputs_hash(config)
    if stage_done(out, expected):
        return stage_manifest(out)["summary"]
    train, test = splits(config)
    summary = {"stage": "prepare", "train": write_questions(out / PREPARED_TRAIN, train),
               "test": write_questions(out / PREPARED_TEST, test)}
    if config.scratch_model:
        build_base_model(config, out)
    write_json_atomic(out / MANIFEST, {"inputs_hash": expected, "summary": summary,
                                       "records": [PREPARED_TRAIN, PREPARED_TEST], "shards": 1})
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="negrl prepare", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("NEGRL_STAGE_CONFIG", STAGE_CONFIG_PATH))
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, PrepareStageConfig)
    report_summary(prepare(config))
    return 0
