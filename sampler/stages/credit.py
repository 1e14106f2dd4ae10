"""`negrl credit`: per-step Monte-Carlo values and the first pit of each negative.

Reads the finished sample stage (its manifest names the questions file, for the references). For
each question: up to N negatives (wrong or unparseable samples, by index), each split into steps
and searched with the configured strategy (`negrl_sampler.credit`). Q_0 comes from the question's
samples. A prefix's completion j has seed derive(seed, question, sample, step) + j, the seed vLLM
gives the j-th child of an n>1 request, so every strategy and every rerun sees the same rollouts;
each request asks for all the completions of a round at once (`n`), sharing the prefix in vLLM's
prefix cache. Records: `CreditRecord`, one per negative, written per question.
"""

from __future__ import annotations

from negrl_operator.api.artifact import read_records, stage_manifest
from negrl_operator.api.stage_config import CreditStageConfig, SamplingParams
from negrl_sampler.credit import RolloutBatch, question_value, search_pit
from negrl_sampler.pairing import by_question, finished, negatives, pit_at_end, positives
from negrl_sampler.record import CreditRecord, Sample
from negrl_sampler.serving.client import CompletionClient, CompletionRequest
from negrl_sampler.stages.rollout import (
    AsyncGrader,
    ShardRun,
    derive_seed,
    execute,
    for_each_unit,
    in_shard,
    load_config,
    load_questions,
    run_all,
)
from negrl_sampler.step import split_steps, step_prefix


def rollout_temperature(params) -> float:
    """The configured temperature; unset (a config not made by the graph): the sampling default."""
    if params.temperature is not None:
        return params.temperature
    return SamplingParams.model_fields["temperature"].default


def prefix_rollout(config: CreditStageConfig, client: CompletionClient, grader: AsyncGrader,
                   negative: Sample, steps: list[str], reference: str):
    """The rollout callable of one negative: completions offset.. of the prefix of `step` steps."""
    params = config.params

    async def rollout(step: int, offset: int, count: int) -> RolloutBatch:
        prefix = step_prefix(steps, step)
        seed = derive_seed(params.seed, "credit", negative.question_id, negative.sample_index, step)
        completion = await client.complete(CompletionRequest(
            prompt=negative.prompt + prefix, n=count, seed=seed + offset, temperature=rollout_temperature(params),
            top_p=params.top_p, max_tokens=params.max_tokens, stop=tuple(params.stop),
        ))
        texts = [choice.text for choice in completion.choices]
        grades = await grader.grade([(prefix + text, reference, config.task) for text in texts])
        return RolloutBatch(
            correct=[grade.correct is True for grade in grades], tokens=completion.completion_tokens,
            texts=texts, finished=[choice.finish_reason != "length" for choice in completion.choices],
        )

    return rollout


async def credit_negative(config: CreditStageConfig, client: CompletionClient, grader: AsyncGrader,
                          negative: Sample, group: list[Sample], reference: str) -> CreditRecord:
    params = config.params
    steps = split_steps(negative.response, params.steps)
    correct = sum(1 for sample in group if sample.grade.correct is True)
    search = await search_pit(
        params.strategy, len(steps), prefix_rollout(config, client, grader, negative, steps, reference),
        k=params.rollouts, estimate=params.estimate,
        question_value=question_value(correct, len(group), params.rollouts, params.estimate),
    )
    recovery = search.recovery
    if search.pit == 1:  # the prefix before the pit is the bare prompt: a correct sample recovers it
        recovery = next((sample.response for sample in positives(group)), None)
    return CreditRecord(
        question_id=negative.question_id, sample_index=negative.sample_index, prompt=negative.prompt,
        steps=steps, values=search.values, pit=search.pit, strategy=params.strategy,
        rollouts=search.rollouts, generated_tokens=search.tokens, recovery=recovery, finished=finished(negative),
    )


def credit_summary(records: list[dict]) -> dict:
    pits = [record["pit"] for record in records]
    at_end = [CreditRecord.model_validate(record) for record in records]
    at_end = [record for record in at_end if pit_at_end(record)]
    return {
        "pit_at_end": len(at_end),
        "pit_at_end_unfinished": sum(1 for record in at_end if not record.finished),
        "questions": len({record["question_id"] for record in records}),
        "negatives": len(records),
        "pits": sum(1 for pit in pits if pit is not None),
        "no_pit": sum(1 for pit in pits if pit is None),
        "steps": sum(len(record["steps"]) for record in records),
        "rollouts": sum(record["rollouts"] for record in records),
        "generated_tokens": sum(record["generated_tokens"] for record in records),
    }


def references(samples_dir: str) -> dict[str, str]:
    manifest = stage_manifest(samples_dir) or {}
    path = manifest.get("summary", {}).get("questions_path")
    if not path:
        raise ValueError(f"{samples_dir}: the sample stage's manifest names no questions file")
    return {question.id: question.answer for question in load_questions(path)}


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv, "credit", CreditStageConfig)
    groups = by_question(Sample.model_validate(record) for record in read_records(config.samples_dir))
    answers = references(config.samples_dir)
    mine = in_shard(sorted(groups), config.shard_index, config.shard_count)
    cap = config.params.negatives_per_question

    async def handle(client: CompletionClient, grader: AsyncGrader, qid: str) -> list[dict]:
        group = groups[qid]
        records = await run_all(credit_negative(config, client, grader, negative, group, answers[qid])
                                for negative in negatives(group)[:cap])
        for record in records:
            grader.metrics.observe_pit_search(record.pit, record.rollouts)
        return [record.model_dump(mode="json") for record in records]

    async def work(run: ShardRun) -> None:
        await for_each_unit(run, mine, lambda qid: qid, handle)

    units = {qid: len(negatives(groups[qid])[:cap]) for qid in mine}
    return execute(config, "credit", units, work, credit_summary)

