"""`negrl prepare`: materialise the train and test questions files of an experiment."""

from __future__ import annotations

import argparse
import os
import random
import shutil
from pathlib import Path

from negrl_operator.api.artifact import MANIFEST, inputs_hash, stage_done, stage_manifest, write_json_atomic
from negrl_operator.api.stage_config import (
    PREPARED_PRETRAIN,
    PREPARED_TEACHER,
    PREPARED_TEST,
    PREPARED_TRAIN,
    PREPARED_VALIDATION,
    STAGE_CONFIG_PATH,
    TEACHER_MODEL_FOLDER,
    DataSourceSpec,
    PrepareStageConfig,
    PretrainDataSpec,
    ScratchModelSpec,
    load_stage_config,
)
from negrl_operator.api.termination import report_summary
from negrl_operator.reconcile.graph import scratch_model_folder
from negrl_sampler.arithmetic import arithmetic_questions, vocabulary
from negrl_sampler.dataset import read_source, write_questions
from negrl_sampler.stargraph import star_graph_questions

TEACHER_SEED_OFFSET = 7_000_003  # the teacher's family: another stream of the pretrain bucket


def arithmetic_splits(config: PrepareStageConfig) -> dict:
    """The generated math task: each split keeps only problems of its own hash bucket, so the splits
    are disjoint whatever their sizes and seeds."""
    source = config.source
    knobs = {"quantities": source.quantities, "chain_length": source.chain_length, "max_value": source.max_value,
             "interact": source.interact, "lexicon": source.lexicon, "seed": source.seed}
    sizes = {PREPARED_TRAIN: min(source.train_size, config.train_size or source.train_size),
             PREPARED_TEST: source.test_size, PREPARED_VALIDATION: source.validation_size}
    out = {name: arithmetic_questions(size, name.removesuffix(".jsonl"), prefix=name.removesuffix(".jsonl"), **knobs)
           for name, size in sizes.items() if size}
    if config.pretrain is not None:
        out[PREPARED_PRETRAIN] = family_questions(config.source, config.pretrain, "pretrain", config.source.seed)
    if config.teacher_data is not None:  # another stream of the same bucket: apart from the student's family
        out[PREPARED_TEACHER] = family_questions(config.source, config.teacher_data, "teacher",
                                                 config.source.seed + TEACHER_SEED_OFFSET)
    return out


def family_questions(source: DataSourceSpec, family: PretrainDataSpec, prefix: str, seed: int) -> list[dict]:
    """A training family from the `pretrain` bucket: each chain length's share (ids
    `<prefix>-c<length>-<i>`), interleaved by a shuffle seeded with `seed`."""
    knobs = {"quantities": family.quantities if family.quantities is not None else source.quantities,
             "interact": family.interact if family.interact is not None else source.interact,
             "max_value": family.max_value or source.max_value,
             "lexicon": family.lexicon if family.lexicon is not None else source.lexicon,
             "own_verbs": family.own_verbs, "seed": seed}
    questions = [question for length, count in family.shares()
                 for question in arithmetic_questions(count, "pretrain", chain_length=length,
                                                      prefix=f"{prefix}-c{length}", **knobs)]
    random.Random(f"negrl-{prefix}/{seed}").shuffle(questions)
    return questions


def splits(config: PrepareStageConfig) -> dict:
    """{file name: question iterator} of the configured source: train, test and (when configured)
    validation."""
    source = config.source
    if source.kind == "arithmetic":
        return arithmetic_splits(config)
    if source.kind == "stargraph":
        train_count = min(source.train_size, config.train_size or source.train_size)
        shape = (source.degree, source.path_length, source.nodes)
        # distinct streams: neither held-out split replays the training generator
        out = {PREPARED_TRAIN: star_graph_questions(train_count, *shape, seed=source.seed, prefix="train"),
               PREPARED_TEST: star_graph_questions(source.test_size, *shape, seed=source.seed + 1_000_003,
                                                   prefix="test")}
        if source.validation_size:
            out[PREPARED_VALIDATION] = star_graph_questions(source.validation_size, *shape,
                                                            seed=source.seed + 2_000_029, prefix="validation")
        return out
    paths = [source.train_path, source.test_path, *([source.validation_path] if source.validation_path else [])]
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"data source file {path} does not exist (spec.data.source)")
    out = {PREPARED_TRAIN: read_source(source.train_path, source.kind, "train", config.train_size),
           PREPARED_TEST: read_source(source.test_path, source.kind, "test")}
    if source.validation_path:
        out[PREPARED_VALIDATION] = read_source(source.validation_path, source.kind, "validation")
    return out


def build_base_model(config: PrepareStageConfig, out: Path) -> None:
    """The from-scratch base models (and a scratch teacher): word tokens for `sequence` tasks and the
    arithmetic source (every number of its range one token), BPE on the training text otherwise."""
    questions = [q for name in (PREPARED_TRAIN, PREPARED_TEST, PREPARED_VALIDATION) if (out / name).exists()
                 for q in read_source(out / name, "questions-jsonl", name)]
    texts = [text for q in questions for text in (q["question"], q["solution"] or q["answer"])]
    words = None
    prompt_words = config.prompt.template.replace("{question}", " ").split()
    if config.task == "sequence":
        words = {word for text in texts for word in text.split()} | set(prompt_words)
    elif config.source.kind == "arithmetic":
        own = max((family.lexicon or 0 for family in (config.pretrain, config.teacher_data)
                   if family is not None and family.own_verbs), default=0)
        words = {*vocabulary(config.source.max_value, config.source.lexicon, own), *prompt_words}
    for seed in config.scratch_seeds if config.scratch_model is not None else ():  # one tokenizer, own weights
        _build_into(out / scratch_model_folder(seed), texts, words, config.scratch_model,
                    config.scratch_model.seed + seed)
    if config.teacher_model is not None:
        _build_into(out / TEACHER_MODEL_FOLDER, texts, words, config.teacher_model, config.teacher_model.seed)


def _build_into(folder: Path, texts: list[str], words, shape: ScratchModelSpec, seed: int) -> None:
    """A scratch model built beside `folder` and moved into place whole."""
    from negrl_trainer.scratch_model import build_scratch_model

    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    build_scratch_model(temporary, texts, words=words, seed=seed, **shape.model_dump(by_alias=False, exclude={"seed"}))
    if folder.exists():
        shutil.rmtree(folder)
    temporary.rename(folder)


def prepare(config: PrepareStageConfig) -> dict:
    out = Path(config.output_dir)
    expected = inputs_hash(config)
    if stage_done(out, expected):
        return stage_manifest(out)["summary"]
    files = splits(config)
    summary = {"stage": "prepare", **{name.removesuffix(".jsonl"): write_questions(out / name, questions)
                                      for name, questions in files.items()}}
    if config.scratch_model or config.teacher_model:
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
