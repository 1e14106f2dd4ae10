"""The shell shared by the rollout stage commands (sample, credit, evaluate).

Lifecycle of one shard: parse `--config`/`--shard`; skip if the shard manifest already matches the
inputs; resume the shard's records file (a torn last line is cut; questions whose records are all
there are skipped); run the questions concurrently, writing each question's records as one unit;
then write the shard manifest (and the stage manifest once every shard is done) and print the
one-line JSON summary, also left as the termination message. On an error nothing already written
is lost: the summary carries the error and the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from negrl_operator.api.artifact import (
    RecordWriter,
    finish_shard,
    inputs_hash,
    read_json,
    read_jsonl,
    shard_done,
    shard_manifest_path,
    shard_records_path,
    stage_manifest,
)
from negrl_operator.api.stage_config import (
    STAGE_CONFIG_PATH,
    PromptSpec,
    StageBase,
    load_stage_config,
    parse_shard,
)
from negrl_operator.api.termination import report_summary
from negrl_sampler.grading.grader import Grade, Grader
from negrl_sampler.record import Question
from negrl_sampler.serving.client import CompletionClient
from negrl_sampler.stages.metrics import ProgressView, RolloutMetrics

SEED_SPACE = 2**31 - 2**12  # room above a derived seed for per-completion offsets


def parse_args(argv: list[str] | None, stage: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"negrl {stage}")
    parser.add_argument("--config", default=os.environ.get("NEGRL_STAGE_CONFIG", STAGE_CONFIG_PATH),
                        help="stage config JSON (default: $NEGRL_STAGE_CONFIG or %(default)s)")
    parser.add_argument("--shard", default=None,
                        help="i/n: run shard i of n (default: $JOB_COMPLETION_INDEX of the config's count)")
    return parser.parse_args(argv)


def load_config(argv: list[str] | None, stage: str, expected: type[StageBase]) -> StageBase:
    args = parse_args(argv, stage)
    return with_shard(load_stage_config(args.config, expected), args.shard)


def with_shard(config: StageBase, shard: str | None) -> StageBase:
    """The config with the shard this pod runs: `--shard i/n`, else an Indexed Job's
    $JOB_COMPLETION_INDEX of the config's count, else the config's own."""
    if shard is not None:
        index, count = parse_shard(shard)
    elif os.environ.get("JOB_COMPLETION_INDEX", "").strip():
        index, count = int(os.environ["JOB_COMPLETION_INDEX"]), config.shard_count
    else:
        index, count = config.shard_index, config.shard_count
    return config.model_copy(update={"shard_index": index, "shard_count": count})


def load_questions(path: str | Path, max_questions: int | None = None) -> list[Question]:
    questions = []
    for record in read_jsonl(path):
        if max_questions is not None and len(questions) >= max_questions:
            break
        questions.append(Question.model_validate({**record, "id": str(record.get("id", len(questions)))}))
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: question ids are not unique")
    return questions


def in_shard(items: Iterable[Any], index: int, count: int) -> list[Any]:
    """Items whose position modulo `count` is `index`."""
    return [item for position, item in enumerate(items) if position % count == index]


def derive_seed(*parts: object) -> int:
    """A stable seed from the config seed and the identity of a request (question, sample, step)."""
    digest = hashlib.sha256(json.dumps([str(part) for part in parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_SPACE


class AsyncGrader:
    """The grader off the event loop (its symbolic checks can block up to their deadline)."""

    def __init__(self, grader: Grader, metrics: RolloutMetrics):
        self.grader, self.metrics = grader, metrics

    async def grade(self, items: list[tuple[str, str, str]]) -> list[Grade]:
        grades = await asyncio.to_thread(self.grader.grade_many, items)
        self.metrics.observe_grades(g.correct for g in grades)
        return grades


async def render_prompt(client: CompletionClient, spec: PromptSpec, question: str) -> str:
    text = spec.render(question)
    return await client.chat_prompt(text) if spec.chat_template else text


def client_for(config: Any, metrics: RolloutMetrics) -> CompletionClient:
    # A chat-rendered prompt already holds the template's special tokens: don't add BOS again.
    extra = {"add_special_tokens": False} if config.prompt.chat_template else None
    return CompletionClient.for_server(config.server, on_request=metrics.observe_request,
                                       on_error=metrics.observe_error, extra_body=extra)


async def run_all(coroutines: Iterable[Awaitable[Any]]) -> list[Any]:
    """Run concurrently; on the first error cancel the rest and raise that error."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def for_each_unit(run: ShardRun, items: Iterable[Any], unit: Callable[[Any], str],
                        handle: Callable[[CompletionClient, AsyncGrader, Any], Awaitable[list[dict]]]) -> None:
    """One grader pool and one client for the shard; every item whose unit is not done yet is
    handled concurrently and its records are written together."""
    with Grader() as pool:
        grader = AsyncGrader(pool, run.metrics)
        async with client_for(run.config, run.metrics) as client:
            async def one(item: Any) -> None:
                await run.write(await handle(client, grader, item))

            await run_all(one(item) for item in items if unit(item) not in run.done)


@dataclass
class ShardRun:
    """What a stage's work function gets: the config, metrics, and `await write(records)`."""

    config: Any
    metrics: RolloutMetrics
    writer: RecordWriter
    done: set[str]
    disk: ThreadPoolExecutor
    progress: ProgressView | None = None
    written: int = field(default=0)

    async def write(self, records: list[dict]) -> None:
        """Append one question's records as one unit (none: nothing to write, still counted). The
        write and its fsync run on the one disk thread, in order, off the event loop."""
        if records:
            await asyncio.get_running_loop().run_in_executor(self.disk, self.writer.write_many, records)
        self.written += len(records)
        self.metrics.questions.inc()
        if self.progress is not None:
            self.progress.advance()


Work = Callable[[ShardRun], Awaitable[None]]
Summarize = Callable[[list[dict]], dict]


def unit_of(record: dict) -> str:
    return record["question_id"]


def prune_incomplete(path: Path, expected: dict[str, int]) -> int:
    """Rewrite the records file (atomically) without units that have other than their expected
    number of records: a crash inside a multi-line write can leave a unit's first lines behind.
    Returns the number of records dropped."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    lines = [line for line in data[: data.rfind(b"\n") + 1].decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    counts: dict[str, int] = {}
    for record in records:
        counts[unit_of(record)] = counts.get(unit_of(record), 0) + 1
    bad = {unit for unit, n in counts.items() if n != expected.get(unit, -1)}
    if not bad:
        return 0
    kept = [line for line, record in zip(lines, records, strict=True) if unit_of(record) not in bad]
    temporary = path.with_name(f".{path.name}.prune")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)
    return len(records) - len(kept)


def record_figures(config: Any, stage: str, totals: dict, figures: Callable[[dict], dict] | None) -> None:
    """The stage's headline figures to TensorBoard (and MLflow), once, from the merged totals, before
    the manifest marks the stage done (an interrupted run then redoes the stage, figures included)."""
    if config.tracking.tensorboard or config.tracking.mlflow_uri:
        from negrl_trainer.tracking import record_stage_summary

        counts = {key: value for key, value in totals.items() if isinstance(value, int | float)}
        record_stage_summary(config, stage, {**counts, **(figures(counts) if figures else {})})


def execute(config: Any, stage: str, units: dict[str, int], work: Work, summarize: Summarize,
            figures: Callable[[dict], dict] | None = None, finalize: Callable[[dict], dict] | None = None) -> int:
    """Run one shard of a stage end to end; returns the exit code. `units` maps this shard's
    question ids to the number of records each writes (a unit with no records is always redone).
    `summarize` gives the shard's additive counts (summed over shards into the manifest);
    `figures` derives this shard's rates from its counts for the summary line. `finalize` (the
    last shard, once all are done, before the stage manifest) writes what is derived from every
    shard's records and returns counts added to the stage's summary."""
    index, count, out = config.shard_index, config.shard_count, config.output_dir
    inputs = inputs_hash(config)
    final: dict = {}

    def before_manifest(totals: dict) -> None:
        if finalize is not None:
            final.update(finalize(totals))
            totals.update(final)  # the merged summary the stage manifest records
        record_figures(config, stage, totals, figures)

    head = {"stage": stage, "shard": f"{index}/{count}", "output_dir": out}
    if shard_done(out, index, count, inputs):
        summary = read_json(shard_manifest_path(out, index, count))["summary"]
        if stage_manifest(out) is None:  # stopped between the shard's manifest and the stage's
            finish_shard(out, index, count, inputs, summary, before_manifest=before_manifest)
        report_summary({**head, **summary, **(figures(summary) if figures else {}), **final,
                        "resumed": "shard already complete"})
        return 0
    metrics = RolloutMetrics(stage)
    path = shard_records_path(out, index, count)
    try:
        metrics.serve(config.metrics_port)
        prune_incomplete(path, units)
        with RecordWriter(path) as writer, ThreadPoolExecutor(1, thread_name_prefix="records") as disk:
            done = {unit_of(record) for record in writer.existing}
            run = ShardRun(config=config, metrics=metrics, writer=writer, done=done, disk=disk)
            with ProgressView(metrics, total=len(units), done=len(done & set(units)),
                              label=Path(out).name) as view:  # the graph's name: eval-sft, credit-s1, ...
                run.progress = view
                asyncio.run(work(run))
        summary = summarize(list(read_jsonl(path)))
        manifest = finish_shard(out, index, count, inputs, summary,  # the last shard records the totals
                                before_manifest=before_manifest)
        report_summary({**head, **summary, **(figures(summary) if figures else {}), **final,
                        "complete": manifest is not None, "request_errors": metrics.totals["errors"]})
        return 0
    except Exception as error:  # noqa: BLE001 - reported as the Job's termination message
        traceback.print_exc(file=sys.stderr)
        kept = sum(1 for _ in read_jsonl(path)) if path.exists() else 0
        report_summary({**head, "error": f"{type(error).__name__}: {error}", "records_kept": kept,
                        "request_errors": metrics.totals["errors"]})
        return 1
    finally:
        metrics.close()
