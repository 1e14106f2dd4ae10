"""Experiment results: accuracy per method over seeds, each method's effective data multiplier on
SFT's |D_syn| curve, the markdown report and the plot. Pure functions except `write_plot`."""

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


def sft_curve(summaries: list[MethodSummary]) -> list[tuple[int, float]]:
    """SFT's mean accuracy by |D_syn| multiple, made non-decreasing (more data never counts as worse)."""
    points = sorted((s.multiplier, s.mean) for s in summaries if s.method == "sft")
    curve, best = [], -math.inf
    for multiplier, accuracy in points:
        best = max(best, accuracy)
        curve.append((multiplier, best))
    return curve


def effective_multiplier(curve: list[tuple[int, float]], accuracy: float) -> tuple[float | None, str]:
    """How much more SFT data reaches `accuracy`, interpolated on a log scale of |D_syn|.

    Returns (value, label): the label is "> 8x" beyond the sweep and "<= 1x" at or below SFT at 1x."""
    if not curve:
        return None, "n/a"
    first_multiplier, first_accuracy = curve[0]
    if accuracy <= first_accuracy:
        return float(first_multiplier), f"<= {first_multiplier}x"
    for (k0, a0), (k1, a1) in zip(curve, curve[1:], strict=False):
        if a0 < accuracy <= a1:
            fraction = (accuracy - a0) / (a1 - a0)
            value = math.exp(math.log(k0) + fraction * (math.log(k1) - math.log(k0)))
            return value, f"{value:.1f}x"
    return None, f"> {curve[-1][0]}x"


def results_table(summaries: list[MethodSummary]) -> list[dict[str, str]]:
    curve = sft_curve(summaries)
    rows = []
    for summary in summaries:
        if summary.method == "sft":
            multiplier = f"{summary.multiplier}x (by definition)"
        else:
            multiplier = effective_multiplier(curve, summary.mean)[1] if summary.multiplier == 1 else "-"
        rows.append({
            "method": summary.method if summary.multiplier == 1 else f"{summary.method} @ {summary.multiplier}x",
            "accuracy": f"{summary.mean:.3f} ± {summary.std:.3f}",
            "pass@k": "-" if summary.pass_at_k is None else f"{summary.pass_at_k:.3f}",
            "seeds": str(summary.seeds),
            "effective data multiplier": multiplier,
        })
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no evaluated policy)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[column] for column in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_plot(summaries: list[MethodSummary], base_size: int | None, path) -> None:
    """Test accuracy vs |D_syn| for SFT (error bars over seeds), other methods marked at their size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = base_size or 1
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    sft = [s for s in summaries if s.method == "sft"]
    axes.errorbar([s.multiplier * size for s in sft], [s.mean for s in sft], yerr=[s.std for s in sft],
                  marker="o", capsize=3, label="SFT")
    markers = {"rft": "s", "outcome-dpo": "v", "step-dpo": "*", "base": "x"}
    others = [s for s in summaries if s.method != "sft"]
    for index, summary in enumerate(others):
        nudge = 1.0 + 0.05 * (index - (len(others) - 1) / 2)  # keep markers at the same size apart
        axes.errorbar([summary.multiplier * size * nudge], [summary.mean], yerr=[summary.std], capsize=3,
                      linestyle="none", marker=markers.get(summary.method, "D"), markersize=9, label=summary.method)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("|D_syn| (synthetic SFT questions)" if base_size else "|D_syn| multiple")
    axes.set_ylabel("test accuracy (greedy pass@1)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
