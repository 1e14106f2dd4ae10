"""Results of an experiment, read from the summaries its stage Jobs left (pure).

Summary fields by stage (see termination.py): synthesize {requests, prompt_tokens,
generated_tokens, generated, accepted, kept, duplicates, contaminated, tokens_per_s, cost_tokens,
dsyn_records, duplicate_problems, ...: sampler/stages/synthesize.py}, sample {questions, samples, correct, wrong,
unparseable}, credit {negatives, pits, rollouts, generated_tokens}, pairs {rft, step_pairs,
outcome_pairs}, evaluate {policy, questions, k, pass_at_1, pass_at_1_ci95: [low, high], pass_at_k}
(the keys `negrl evaluate` writes: sampler/stages/evaluate.py). The status keeps them in its own
camelCase (generatedTokens, passAt1), converted once, where a Job's summary is read.
"""

from __future__ import annotations

from typing import Any

from negrl_operator.api.artifact import merge_summaries
from negrl_operator.api.status import (
    ExperimentResults,
    PolicyResult,
    ResultCounts,
    StageStatus,
    SynthesisResult,
    camel,
    camel_keys,
)
from negrl_operator.api.termination import shorten
from negrl_operator.reconcile.observation import PodReport, parse_summary

MERGED_KINDS = ("synthesize", "sample", "credit")  # shards of these add up; other stages report from pod 0
# Ratios of a merged summary, recomputed from the summed counts (a sum of the shards' ratios is not one):
# kind -> {key: (numerator key, denominator key)}. Rates per second do add up: the shards run at once.
MERGED_RATIOS = {"synthesize": {"acceptance_rate": ("accepted", "generated")}}
# ResultCounts field <- (stage kind, summary key)
COUNT_SOURCES: dict[str, tuple[str, str]] = {
    "questions": ("sample", "questions"), "samples": ("sample", "samples"), "positives": ("sample", "correct"),
    "negatives": ("sample", "wrong"), "unparseable": ("sample", "unparseable"), "pits": ("credit", "pits"),
    "rollouts": ("credit", "rollouts"), "generated_tokens": ("credit", "generated_tokens"),
    "rft_examples": ("pairs", "rft"), "step_pairs": ("pairs", "step"), "outcome_pairs": ("pairs", "outcome"),
}


def job_summary(kind: str, pods: list[PodReport], completions: int) -> tuple[dict[str, Any], int]:
    """The stage summary from its succeeded pods (one per completion index) and how many are missing."""
    by_index: dict[int, dict] = {}
    for pod in sorted(pods, key=lambda p: p.finished_at or ""):
        summary = parse_summary(pod.message) if pod.phase == "Succeeded" else None
        if summary is not None:
            by_index[pod.index] = summary
    missing = sum(1 for index in range(completions) if index not in by_index)
    if kind in MERGED_KINDS:
        return camel_keys(merged_shards(kind, [by_index[i] for i in sorted(by_index)])), missing
    first = by_index.get(0, next(iter(by_index.values()), {}))
    return camel_keys(first), (0 if 0 in by_index else 1)


def merged_shards(kind: str, summaries: list[dict]) -> dict:
    """One summary of a sharded stage from its shards' (in index order): counts summed, ratios
    recomputed from the sums; a stage whose shards do not add up reports its first shard's."""
    if kind not in MERGED_KINDS:
        return summaries[0] if summaries else {}
    merged = merge_summaries(summaries)
    for key, (numerator, denominator) in MERGED_RATIOS.get(kind, {}).items():
        if key in merged and merged.get(denominator):
            merged[key] = round(merged.get(numerator, 0) / merged[denominator], 4)
    return merged


def failure_message(pods: list[PodReport], fallback: str) -> str:
    """The error of the last failed pod's termination message (its head and a bounded tail)."""
    failed = sorted((p for p in pods if p.phase == "Failed"), key=lambda p: p.finished_at or "")
    for pod in reversed(failed):
        if pod.message and pod.message.strip():
            summary = parse_summary(pod.message) or {}
            return shorten(str(summary.get("error") or summary.get("message") or pod.message))
    return fallback or "the Job failed"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def policy_result(policy: str, summary: dict[str, Any]) -> PolicyResult:
    summary = camel_keys(summary)
    k, questions = _number(summary.get("k")), _number(summary.get("questions"))
    interval = summary.get("passAt1Ci95")
    low, high = interval if isinstance(interval, list) and len(interval) == 2 else (None, None)
    return PolicyResult(
        policy=policy, accuracy=_number(summary.get("passAt1")), accuracy_ci_low=_number(low),
        accuracy_ci_high=_number(high), pass_k=_number(summary.get("passAtK")),
        k=int(k) if k is not None else None, questions=int(questions) if questions is not None else None,
    )


def results(stages: list[StageStatus], policy_of: dict[str, str]) -> ExperimentResults:
    """Accuracy per evaluated policy, counts summed over seeds, and the best policy."""
    done = [stage for stage in stages if stage.state == "Succeeded"]
    policies = [policy_result(policy_of[s.name], s.summary) for s in done if s.kind == "evaluate" and s.name in policy_of]
    counts: dict[str, int] = {}
    for field, (kind, key) in COUNT_SOURCES.items():
        values = [_number(camel_keys(s.summary).get(camel(key))) for s in done if s.kind == kind]
        values = [v for v in values if v is not None]
        if values:
            counts[field] = int(sum(values))
    scored = [p for p in policies if p.accuracy is not None]
    best = max(scored, key=lambda p: p.accuracy, default=None)
    synthesized = next((s for s in done if s.kind == "synthesize"), None)
    return ExperimentResults(
        policies=policies, counts=ResultCounts(**counts),
        best_policy=best.policy if best else None, best_accuracy=best.accuracy if best else None,
        synthesis=synthesis_result(synthesized.summary) if synthesized else None,
    )


def synthesis_result(summary: dict[str, Any]) -> SynthesisResult:
    """The synthesize stage's figures from its merged summary: dropped duplicates are repeated
    solutions plus repeated new problems; D_syn's size is what the last shard wrote."""
    summary = camel_keys(summary)

    def count(*keys: str) -> int | None:
        values = [_number(summary.get(key)) for key in keys]
        found = [value for value in values if value is not None]
        return int(sum(found)) if found else None

    return SynthesisResult(
        requests=count("requests"), generated_tokens=count("generatedTokens"),
        tokens_per_s=_number(summary.get("tokensPerS")), acceptance_rate=_number(summary.get("acceptanceRate")),
        duplicates=count("duplicates", "duplicateProblems"), contaminated=count("contaminated"),
        cost_tokens=count("costTokens"), examples=count("dsynRecords"),
    )
