"""`negrl evaluate`: greedy pass@1 and sampled pass@k on a test set, with 95% intervals.

Per question: one greedy completion (temperature 0) and k sampled ones (n=k, the configured
temperature, a seed derived from the question). pass@k is the fraction of questions with at least
one correct sample among the k; intervals are Wilson score intervals over questions.

Records: `EvalResult`, one per question. Shard summaries hold counts only (they are summed across
shards); `evaluation_figures(counts)` turns counts into rates and intervals. When the stage's last
shard finishes it also writes `summary.json` (counts and figures) next to the manifest.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from negrl_operator.api.artifact import stage_manifest, write_json_atomic
from negrl_operator.api.stage_config import EvaluateStageConfig
from negrl_sampler.record import EvalResult, Question
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

Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion; (0, 1) with no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)


def evaluation_counts(records: list[dict]) -> dict:
    return {
        "questions": len(records),
        "greedy_correct": sum(1 for r in records if r["greedy_correct"] is True),
        "greedy_unparseable": sum(1 for r in records if r["greedy_correct"] is None),
        "pass_at_k_correct": sum(1 for r in records if r["sampled_correct"] > 0),
        "sampled_correct": sum(r["sampled_correct"] for r in records),
        "samples": sum(r["samples"] for r in records),
    }


def evaluation_figures(counts: dict, k: int) -> dict:
    questions = counts["questions"]
    greedy = wilson_interval(counts["greedy_correct"], questions)
    at_k = wilson_interval(counts["pass_at_k_correct"], questions)
    return {
        "k": k,
        "pass_at_1": counts["greedy_correct"] / questions if questions else 0.0,
        "pass_at_1_ci95": list(greedy),
        "pass_at_k": counts["pass_at_k_correct"] / questions if questions else 0.0,
        "pass_at_k_ci95": list(at_k),
        "sampled_accuracy": counts["sampled_correct"] / counts["samples"] if counts["samples"] else 0.0,
    }


async def evaluate_question(config: EvaluateStageConfig, client: CompletionClient, grader: AsyncGrader,
                            question: Question) -> EvalResult:
    params = config.params
    prompt = await render_prompt(client, config.prompt, question.question)
    seed = derive_seed(params.seed, "evaluate", question.id)
    common = {"prompt": prompt, "max_tokens": params.max_tokens, "stop": tuple(params.stop)}
    greedy, sampled = await asyncio.gather(
        client.complete(CompletionRequest(**common, n=1, temperature=0.0, seed=seed)),
        client.complete(CompletionRequest(**common, n=params.k, temperature=params.temperature, seed=seed)),
    )
    texts = [greedy.choices[0].text] + [choice.text for choice in sampled.choices]
    grades = await grader.grade([(text, question.answer, config.task) for text in texts])
    return EvalResult(
        question_id=question.id, greedy_correct=grades[0].correct, greedy_response=texts[0],
        sampled_correct=sum(1 for grade in grades[1:] if grade.correct is True), samples=params.k,
    )


def write_final_summary(config: EvaluateStageConfig) -> None:
    manifest = stage_manifest(config.output_dir)
    if manifest is None or "questions" not in manifest["summary"]:
        return
    counts = {key: value for key, value in manifest["summary"].items() if isinstance(value, int)}
    figures = evaluation_figures(counts, config.params.k)
    write_json_atomic(Path(config.output_dir) / "summary.json",
                      {"policy": config.policy, "task": config.task, **counts, **figures})


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv, "evaluate", EvaluateStageConfig)
    questions = in_shard(load_questions(config.questions, config.max_questions),
                         config.shard_index, config.shard_count)

    async def handle(client: CompletionClient, grader: AsyncGrader, question: Question) -> list[dict]:
        return [(await evaluate_question(config, client, grader, question)).model_dump(mode="json")]

    async def work(run: ShardRun) -> None:
        await for_each_unit(run, questions, lambda question: question.id, handle)

    def summarize(records: list[dict]) -> dict:
        counts = evaluation_counts(records)
        return {"policy": config.policy, **counts}

    code = execute(config, "evaluate", {q.id: 1 for q in questions}, work, summarize,
                   figures=lambda counts: evaluation_figures(counts, config.params.k))
    if code == 0:
        write_final_summary(config)
    return code
