"""`negrl sample`: M graded samples per question from the policy.

One request per question with n=M and a seed derived from (config seed, question id), so a rerun
asks for, and gets, the same text. Records: `Sample`, M per question, written together.
"""

from __future__ import annotations

from negrl_operator.api.stage_config import SampleStageConfig
from negrl_sampler.record import Question, Sample
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
    render_prompt,
)


def sample_request(config: SampleStageConfig, prompt: str, question_id: str) -> CompletionRequest:
    params = config.params
    return CompletionRequest(
        prompt=prompt, n=params.samples_per_question, seed=derive_seed(params.seed, "sample", question_id),
        temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
        stop=tuple(params.stop),
    )


async def sample_question(config: SampleStageConfig, client: CompletionClient, grader: AsyncGrader,
                          question: Question) -> list[Sample]:
    prompt = await render_prompt(client, config.prompt, question.question)
    completion = await client.complete(sample_request(config, prompt, question.id))
    grades = await grader.grade([(c.text, question.answer, config.task) for c in completion.choices])
    return [
        Sample(question_id=question.id, sample_index=index, prompt=prompt, response=choice.text,
               finish_reason=choice.finish_reason, completion_tokens=choice.tokens, grade=grade)
        for index, (choice, grade) in enumerate(zip(completion.choices, grades, strict=True))
    ]


def sample_summary(records: list[dict], questions_path: str) -> dict:
    """Additive counts (shards are summed) plus the questions file the samples answer."""
    grades = [record["grade"]["correct"] for record in records]
    return {
        "questions_path": questions_path,
        "questions": len({record["question_id"] for record in records}),
        "samples": len(records),
        "correct": sum(1 for g in grades if g is True),
        "wrong": sum(1 for g in grades if g is False),
        "unparseable": sum(1 for g in grades if g is None),
        "generated_tokens": sum(record["completion_tokens"] for record in records),
    }


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv, "sample", SampleStageConfig)
    questions = in_shard(load_questions(config.questions, config.max_questions),
                         config.shard_index, config.shard_count)
    per_question = config.params.samples_per_question

    async def handle(client: CompletionClient, grader: AsyncGrader, question: Question) -> list[dict]:
        return [sample.model_dump(mode="json") for sample in await sample_question(config, client, grader, question)]

    async def work(run: ShardRun) -> None:
        await for_each_unit(run, questions, lambda question: question.id, handle)

    units = {question.id: per_question for question in questions}
    return execute(config, "sample", units, work, lambda records: sample_summary(records, config.questions))
