"""`negrl synthesize`: D_syn written by a teacher (an endpoint or a served model), verified,
de-duplicated and decontaminated.

One record per unit (a training question in `solutions` mode, a new-problem slot in `problems`
mode) with the solutions kept for it and its counts, written by the rollout shell (sharded,
resumable: a killed shard redoes only the units it had not written). Once every shard is done,
`<output_dir>/train.jsonl` (D_syn, the format SFT reads) is derived from all records.
Requests are seeded per unit, so a rerun asks for the same text.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from pydantic import ValidationError

from negrl_operator.api.artifact import read_jsonl, shard_records_path
from negrl_operator.api.exit_code import ConfigError
from negrl_operator.api.stage_config import PREPARED_TRAIN, read_input, validation_problems
from negrl_operator.api.teacher import SynthesizeStageConfig
from negrl_sampler.arithmetic_check import solution_checks
from negrl_sampler.dataset import write_questions
from negrl_sampler.grading.answer import extract
from negrl_sampler.grading.grader import Grader
from negrl_sampler.record import Question
from negrl_sampler.serving.client import Completion, CompletionClient, CompletionRequest
from negrl_sampler.serving.throttle import BudgetExhausted, Throttle
from negrl_sampler.stages.metrics import RolloutMetrics
from negrl_sampler.stages.rollout import (
    AsyncGrader,
    ShardRun,
    derive_seed,
    execute,
    in_shard,
    load_questions,
    parse_args,
    run_all,
    with_shard,
)
from negrl_sampler.synthesis import (
    HeldoutIndex,
    dsyn,
    majority,
    problem_prompt,
    problem_text,
    rates,
    select_solutions,
    solution_prompt,
    unit_counts,
)

PROBLEM_STOP = ("\n\n",)


def load_config(argv: list[str] | None) -> SynthesizeStageConfig:
    """The stage config, with the same one-line errors as the other stages' (`load_stage_config`)."""
    args = parse_args(argv, "synthesize")
    source = "<stdin>" if args.config == "-" else args.config
    try:
        document = json.loads(read_input(args.config))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{source}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}; "
                          "fix the syntax") from None
    kind = document.get("kind", "synthesize") if isinstance(document, dict) else None
    if kind != "synthesize":
        raise ConfigError(f"{source}: stage config kind {kind!r} is not 'synthesize'")
    try:
        config = SynthesizeStageConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid stage config: {validation_problems(error)}") from None
    return with_shard(config, args.shard)


def teacher_client(config: SynthesizeStageConfig, metrics: RolloutMetrics) -> CompletionClient:
    """The served teacher like a policy's sampler; an endpoint with its key (from the environment,
    never from the config), no /health, a rate limit and hard caps."""
    hooks = {"on_request": metrics.observe_request, "on_error": metrics.observe_error}
    if config.server is not None:
        return CompletionClient.for_server(config.server, **hooks)
    endpoint = config.endpoint
    return CompletionClient(
        endpoint.base_url, endpoint.model, timeout_s=endpoint.timeout_s, max_concurrency=endpoint.max_concurrency,
        max_retries=endpoint.max_retries, health_probe=False, api_key=os.environ.get(endpoint.api_key_env) or None,
        throttle=Throttle.of(endpoint.requests_per_second, endpoint.max_requests, endpoint.max_tokens_total), **hooks,
    )


def solutions_request(config: SynthesizeStageConfig, question: str, unit: str) -> CompletionRequest:
    params = config.params
    return CompletionRequest(
        prompt=solution_prompt(params, question), n=params.solutions_per_question,
        seed=derive_seed(params.seed, "synthesize", unit), temperature=params.temperature, top_p=params.top_p,
        max_tokens=params.max_tokens, stop=tuple(params.stop),
    )


def cost(completion: Completion, requests: int = 1) -> dict[str, int]:
    return {"requests": requests, "prompt_tokens": completion.prompt_tokens,
            "generated_tokens": completion.completion_tokens}


async def complete_k(client: CompletionClient, request: CompletionRequest) -> tuple[Completion, int]:
    """The K completions of a request and the requests it took: greedy decoding (temperature 0)
    is refused with n > 1 by vLLM, so it sends K requests of n = 1 (K copies of one text)."""
    if request.temperature > 0 or request.n == 1:
        return await client.complete(request), 1
    parts = await asyncio.gather(*(client.complete(request.model_copy(update={"n": 1})) for _ in range(request.n)))
    merged = Completion(choices=[choice for part in parts for choice in part.choices],
                        prompt_tokens=sum(part.prompt_tokens for part in parts),
                        completion_tokens=sum(part.completion_tokens for part in parts))
    return merged, len(parts)


def add_costs(*costs: dict[str, int]) -> dict[str, int]:
    return {key: sum(part[key] for part in costs) for key in costs[0]}


async def solve_question(config: SynthesizeStageConfig, client: CompletionClient, grader: AsyncGrader,
                         question: Question, order: int) -> dict:
    """K teacher solutions of a training question; kept: graded correct against its reference."""
    completion, requests = await complete_k(client, solutions_request(config, question.question, question.id))
    texts = [choice.text for choice in completion.choices]
    grades = await grader.grade([(text, question.answer, config.task) for text in texts])
    graded = [grade.correct is True for grade in grades]
    # the arithmetic task re-runs every line: a right answer reached through a wrong or garbled line is refused
    accepted = [ok and solution_checks(question.question, text) for ok, text in zip(graded, texts, strict=True)] \
        if config.check_lines else graded
    chosen = select_solutions(texts, accepted, config.params.keep_per_question)
    return {"question_id": question.id, "order": order, "mode": "solutions", "question": question.question,
            "answer": question.answer, "solutions": chosen.kept, "generated": len(texts),
            "accepted": sum(accepted), "line_errors": sum(graded) - sum(accepted), "kept": len(chosen.kept),
            "rejected": chosen.rejected, "duplicates": chosen.duplicates, "surplus": chosen.surplus,
            **cost(completion, requests)}


async def write_problem(config: SynthesizeStageConfig, client: CompletionClient, grader: AsyncGrader,
                        heldout: HeldoutIndex, slot: int) -> dict:
    """A new problem from the seed problems; dropped when empty or overlapping a held-out question;
    else solved K times and labelled by the majority answer when agreement is above the threshold."""
    params, unit = config.params, f"p{slot}"
    asked = await client.complete(CompletionRequest(
        prompt=problem_prompt(params, slot), seed=derive_seed(params.seed, "problem", unit),
        temperature=params.temperature, top_p=params.top_p, max_tokens=params.problem_max_tokens, stop=PROBLEM_STOP,
    ))
    text = problem_text(asked.choices[0].text)
    record = {"question_id": unit, "order": slot, "mode": "problems", "question": text, "answer": None, "solutions": [],
              **cost(asked)}
    if text is None:
        return {**record, "empty": 1}
    overlap = heldout.overlap(text)
    if overlap > params.overlap:
        return {**record, "contaminated": 1, "overlap": round(overlap, 4)}
    solved, requests = await complete_k(client, solutions_request(config, text, unit))
    texts = [choice.text for choice in solved.choices]
    record.update(add_costs(cost(asked), cost(solved, requests)), generated=len(texts), overlap=round(overlap, 4))
    label, agreement = majority([extract(text, config.task) for text in texts])
    record["agreement"] = round(agreement, 4)
    if label is None or agreement <= params.agreement:
        return {**record, "disagreed": 1, "rejected": len(texts)}
    grades = await grader.grade([(text, label, config.task) for text in texts])
    accepted = [grade.correct is True for grade in grades]
    chosen = select_solutions(texts, accepted, params.keep_per_question)
    return {**record, "answer": label, "solutions": chosen.kept, "accepted": sum(accepted), "kept": len(chosen.kept),
            "rejected": chosen.rejected, "duplicates": chosen.duplicates, "surplus": chosen.surplus}


def heldout_index(config: SynthesizeStageConfig) -> HeldoutIndex:
    questions = [record["question"] for path in config.heldout for record in read_jsonl(path)]
    return HeldoutIndex(questions, config.params.ngram)


class EmptyDsynError(RuntimeError):
    """No teacher solution or problem survived the checks."""


def write_dsyn(config: SynthesizeStageConfig) -> dict:
    """D_syn from every shard's records, as `<output_dir>/train.jsonl`; its counts for the summary."""
    count = config.shard_count
    records = [record for index in range(count) for record in read_jsonl(shard_records_path(config.output_dir,
                                                                                             index, count))]
    questions, duplicate_problems = dsyn(records)
    if not questions and config.fail_if_empty:  # SFT and sampling would train and score on nothing
        generated = sum(record.get("generated", 0) for record in records)
        raise EmptyDsynError(f"the teacher's D_syn is empty: none of its {generated} solutions was accepted "
                             f"({len(records)} records); train or pick a stronger teacher, or raise "
                             "teacher.synthesis.solutionsPerQuestion")
    path = Path(config.output_dir) / PREPARED_TRAIN
    write_questions(path, questions)
    return {"dsyn_records": len(questions), "duplicate_problems": duplicate_problems, "dsyn_path": str(path)}


def units_of(config: SynthesizeStageConfig) -> list[tuple[str, int, Question | None]]:
    """(unit id, order, question) of this shard: training questions, or new-problem slots."""
    if config.params.mode == "solutions":
        questions = load_questions(config.questions, config.max_questions)
        items = [(question.id, order, question) for order, question in enumerate(questions)]
    else:
        items = [(f"p{slot}", slot, None) for slot in range(config.problems)]
    return in_shard(items, config.shard_index, config.shard_count)


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv)
    units = units_of(config)
    heldout = heldout_index(config) if config.params.mode == "problems" else None
    run_totals = {"run_seconds": 0.0, "run_generated_tokens": 0}

    async def work(run: ShardRun) -> None:
        started = time.monotonic()
        with Grader() as pool:
            grader = AsyncGrader(pool, run.metrics)
            async with teacher_client(config, run.metrics) as client:
                capped: list[BudgetExhausted] = []

                async def one(unit: str, order: int, question: Question | None) -> None:
                    try:
                        if question is not None:
                            record = await solve_question(config, client, grader, question, order)
                        else:
                            record = await write_problem(config, client, grader, heldout, order)
                    except BudgetExhausted as error:  # answers already paid for still get written
                        capped.append(error)
                        return
                    run_totals["run_generated_tokens"] += record["generated_tokens"]
                    await run.write([record])

                try:
                    await run_all(one(*item) for item in units if item[0] not in run.done)
                finally:
                    run_totals["run_seconds"] += time.monotonic() - started
                if capped:
                    raise capped[0]

    def summarize(records: list[dict]) -> dict:
        return {**unit_counts(records), **{key: round(value, 3) for key, value in run_totals.items()}}

    return execute(config, "synthesize", {unit: 1 for unit, _, _ in units}, work, summarize, figures=rates,
                   finalize=lambda totals: write_dsyn(config))
