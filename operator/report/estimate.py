"""Estimates from a run's evaluations: accuracy per method over seeds, SFT's accuracy curve over
|D_syn| (made monotone, interpolated piecewise log-linearly), the per-question correctness tables of a
run's policies (checked to pair: same seeds, same questions) and the bootstrap over seeds x questions
that every interval of the report is read from. Pure functions over plain values (numpy where noted).
The comparisons to SFT at n built on these live in `comparison`."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

METHOD_ORDER = ("base", "sft", "rft", "outcome-dpo", "step-dpo")


@dataclass(frozen=True)
class PolicyResult:
    method: str          # sft, rft, outcome-dpo, step-dpo, base
    multiplier: int      # |D_syn| multiple the policy was trained at (SFT sweep), 1 otherwise
    seed: int
    accuracy: float      # greedy pass@1 on the test split
    pass_at_k: float | None = None


@dataclass(frozen=True)
class MethodSummary:
    method: str
    multiplier: int
    mean: float
    std: float
    seeds: int
    pass_at_k: float | None


def summarise(results: list[PolicyResult]) -> list[MethodSummary]:
    groups: dict[tuple[str, int], list[PolicyResult]] = {}
    for result in results:
        groups.setdefault((result.method, result.multiplier), []).append(result)
    summaries = []
    for (method, multiplier), group in groups.items():
        accuracies = [r.accuracy for r in group]
        at_k = [r.pass_at_k for r in group if r.pass_at_k is not None]
        summaries.append(MethodSummary(
            method, multiplier, statistics.fmean(accuracies),
            statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0, len(group),
            statistics.fmean(at_k) if at_k else None,
        ))
    rank = {method: index for index, method in enumerate(METHOD_ORDER)}
    return sorted(summaries, key=lambda s: (rank.get(s.method, len(rank)), s.multiplier))


def monotone(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(multiplier, accuracy) sorted by multiplier with the accuracy made non-decreasing (running max):
    more data never counts as worse, so a dip between sweep points cannot create two crossings."""
    curve, best = [], -math.inf
    for multiplier, accuracy in sorted(points):
        best = max(best, accuracy)
        curve.append((multiplier, best))
    return curve


def sft_curve(summaries: list[MethodSummary]) -> list[tuple[int, float]]:
    """SFT's mean accuracy by |D_syn| multiple, made non-decreasing."""
    return monotone([(s.multiplier, s.mean) for s in summaries if s.method == "sft"])


def effective_multiplier(curve: list[tuple[int, float]], accuracy: float) -> float:
    """How much more SFT data reaches `accuracy`: piecewise log-linear interpolation of the monotone
    curve, every sweep point a knot (log |D_syn| linear in accuracy between neighbouring points).
    The first multiplier at or below the curve's first point, inf past its last (no extrapolation)."""
    if not curve:
        raise ValueError("an effective multiplier needs at least one SFT sweep point")
    first_multiplier, first_accuracy = curve[0]
    if accuracy <= first_accuracy:
        return float(first_multiplier)
    for (k0, a0), (k1, a1) in zip(curve, curve[1:], strict=False):
        if a0 < accuracy <= a1:
            fraction = (accuracy - a0) / (a1 - a0)
            return math.exp(math.log(k0) + fraction * (math.log(k1) - math.log(k0)))
    return math.inf


# --- Per-question correctness, paired across policies ----------------------------------------------

PAIRING_RULE = "every policy must be evaluated on the same seeds and questions"


class ReportError(ValueError):
    """The run's evaluations cannot be compared as they are (nothing is dropped to make them fit)."""


@dataclass(frozen=True)
class Correctness:
    """Greedy correctness of one policy: `table[i][j]` for seed `seeds[i]` and question `questions[j]`.
    Every policy of a comparison shares the seeds and the questions (that is what makes it paired)."""

    method: str
    multiplier: int
    seeds: tuple[int, ...]
    questions: tuple[str, ...]
    table: tuple[tuple[bool, ...], ...]


def policy_name(method: str, multiplier: int) -> str:
    """sft@n, sft@4x, step-dpo, step-dpo@2x: how errors and tables name a policy."""
    if multiplier == 1:
        return "sft@n" if method == "sft" else method
    return f"{method}@{multiplier}x"


def correctness_tables(evaluations: list[tuple[str, int, int, dict[str, bool]]]) -> list[Correctness]:
    """(method, multiplier, seed, {question: greedy correct}) per evaluated policy -> one table per
    (method, multiplier) over its seeds and questions. Raises ReportError when the seeds of one policy
    answered different questions."""
    groups: dict[tuple[str, int], dict[int, dict[str, bool]]] = {}
    for method, multiplier, seed, answers in evaluations:
        groups.setdefault((method, multiplier), {})[seed] = answers
    tables = []
    for (method, multiplier), by_seed in groups.items():
        seeds = tuple(sorted(by_seed))
        questions = set(by_seed[seeds[0]])
        for seed in seeds[1:]:
            if set(by_seed[seed]) != questions:
                missing, extra = len(questions - set(by_seed[seed])), len(set(by_seed[seed]) - questions)
                raise ReportError(
                    f"{policy_name(method, multiplier)}: seed {seed} answered {len(by_seed[seed])} questions, "
                    f"seed {seeds[0]} {len(questions)} ({missing} of seed {seeds[0]}'s missing, {extra} others); "
                    f"{PAIRING_RULE}")
        ordered = tuple(sorted(questions))
        table = tuple(tuple(bool(by_seed[s][q]) for q in ordered) for s in seeds)
        tables.append(Correctness(method, multiplier, seeds, ordered, table))
    return tables


def paired_with(reference: Correctness, policy: Correctness) -> Correctness:
    """`policy` with its questions in `reference`'s order; ReportError naming the policy when its seeds
    or its questions differ from the reference's."""
    name, reference_name = policy_name(policy.method, policy.multiplier), policy_name(reference.method,
                                                                                       reference.multiplier)
    if policy.seeds != reference.seeds:
        raise ReportError(f"{name}: seeds {list(policy.seeds)} but {reference_name} has "
                          f"{list(reference.seeds)}; {PAIRING_RULE}")
    if policy.questions == reference.questions:
        return policy
    own, wanted = set(policy.questions), set(reference.questions)
    if own != wanted:
        raise ReportError(f"{name}: {len(wanted - own)} of {reference_name}'s {len(wanted)} questions missing "
                          f"and {len(own - wanted)} not in {reference_name}'s; {PAIRING_RULE}")
    column = {question: index for index, question in enumerate(policy.questions)}
    table = tuple(tuple(row[column[q]] for q in reference.questions) for row in policy.table)
    return Correctness(policy.method, policy.multiplier, policy.seeds, reference.questions, table)


# --- Bootstrap over seeds x test questions ---------------------------------------------------------

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 0


def resample_weights(rng, count: int, replicates: int):
    """How often each of `count` items is drawn in each replicate (replicates x count), numpy."""
    import numpy as np

    draws = rng.integers(0, count, size=(replicates, count))
    return np.stack([np.bincount(row, minlength=count) for row in draws])


def replicate_means(table, seed_weights, question_weights):
    """Mean accuracy of a (seeds x questions) 0/1 table in every replicate: the mean over the drawn
    (seed, question) cells, i.e. sum_ij ws_i * wq_j * x_ij / (S * Q)."""
    import numpy as np

    table = np.asarray(table, dtype=float)
    seeds, questions = table.shape
    return np.einsum("bi,ij,bj->b", seed_weights, table, question_weights) / (seeds * questions)


def quantile_interval(values) -> tuple[float, float]:
    """The 2.5% and 97.5% points (no interpolation, so infinities stay infinities)."""
    import numpy as np

    low, high = np.quantile(np.asarray(values, dtype=float), [0.025, 0.975], method="inverted_cdf")
    return float(low), float(high)


def accuracy_intervals(policies: list[Correctness], replicates: int = BOOTSTRAP_REPLICATES,
                       seed: int = BOOTSTRAP_SEED) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(method, multiplier) -> (mean accuracy, 2.5%, 97.5%) from a bootstrap over each policy's own
    seeds x questions (the SFT curve's band in the plot)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    intervals = {}
    for policy in policies:
        seed_weights = resample_weights(rng, len(policy.seeds), replicates)
        question_weights = resample_weights(rng, len(policy.questions), replicates)
        means = replicate_means(policy.table, seed_weights, question_weights)
        point = float(np.mean(np.asarray(policy.table, dtype=float)))
        intervals[(policy.method, policy.multiplier)] = (point, *quantile_interval(means))
    return intervals


@dataclass(frozen=True)
class CurvePoint:
    """One SFT sweep point as the report draws it: x = distinct synthetic examples it trained on."""

    multiplier: int
    distinct_examples: int | None     # None: the run has no |D_syn| (the axis is then the multiple)
    accuracy: float
    low: float                        # 95% bootstrap band
    high: float
    monotone_accuracy: float          # the running max the multipliers are interpolated on


def sft_curve_points(intervals: dict[tuple[str, int], tuple[float, float, float]],
                     distinct_examples: dict[int, int] | None) -> list[CurvePoint]:
    """The SFT sweep from `accuracy_intervals`, by multiplier; `distinct_examples`: multiplier ->
    distinct synthetic examples that point trained on."""
    points = sorted((k, value) for (method, k), value in intervals.items() if method == "sft")
    curve = dict(monotone([(k, accuracy) for k, (accuracy, _, _) in points]))
    return [CurvePoint(k, None if distinct_examples is None else distinct_examples[k], accuracy, low, high, curve[k])
            for k, (accuracy, low, high) in points]
