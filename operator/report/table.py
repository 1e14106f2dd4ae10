"""The results table of a run: one row per method (and SFT sweep point) with its accuracy, pass@k,
seeds, its paired difference to SFT at n (bootstrap interval; the per-seed t interval beside it when
the seeds are few), the Holm-adjusted p-value and the effective data multiplier, as plain rows and as
markdown. A policy without a paired comparison gets no multiplier: none is read off bare means."""

from __future__ import annotations

from negrl_operator.report.comparison import Comparison
from negrl_operator.report.estimate import MethodSummary
from negrl_operator.report.significance import FEW_SEEDS

DIFFERENCE = "Δ vs SFT@n [bootstrap 95% CI]"
T_INTERVAL = "Δ per-seed t 95% CI"
HOLM = "Holm p"
MULTIPLIER = "effective data multiplier"


def _interval(low: float, high: float, digits: int = 3) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def _comparison_cells(comparison: Comparison | None, with_t: bool) -> dict[str, str]:
    if comparison is None:
        return {DIFFERENCE: "-", **({T_INTERVAL: "-"} if with_t else {}), HOLM: "-"}
    cells = {DIFFERENCE: f"{comparison.difference:+.3f} {_interval(*comparison.difference_ci)}"}
    if with_t:
        cells[T_INTERVAL] = "-" if comparison.t_ci is None else _interval(*comparison.t_ci)
    cells[HOLM] = f"{comparison.p_holm:.3g}" + ("" if comparison.significant else " (n.s.)")
    return cells


def results_table(summaries: list[MethodSummary], comparisons: list[Comparison] | None = None) -> list[dict[str, str]]:
    comparisons = comparisons or []
    by_policy = {(c.method, c.policy_multiplier): c for c in comparisons}
    with_t = any(len(c.seeds) < FEW_SEEDS for c in comparisons)
    rows = []
    for summary in summaries:
        comparison = by_policy.get((summary.method, summary.multiplier))
        if summary.method == "sft":
            multiplier = f"{summary.multiplier}x (by definition)"
        else:
            multiplier = "-" if comparison is None else comparison.label
        row = {
            "method": summary.method if summary.multiplier == 1 else f"{summary.method} @ {summary.multiplier}x",
            "accuracy": f"{summary.mean:.3f} ± {summary.std:.3f}",
            "pass@k": "-" if summary.pass_at_k is None else f"{summary.pass_at_k:.3f}",
            "seeds": str(summary.seeds),
        }
        if comparisons:
            row.update(_comparison_cells(comparison, with_t))
        row[MULTIPLIER] = multiplier
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no evaluated policy)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[column] for column in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def teacher_lines(synthesis: dict | None) -> list[str]:
    """The teacher's headline figures from the synthesize stage's summary (none without a teacher)."""
    if not synthesis:
        return []
    refused = synthesis.get("line_errors", 0)
    return [
        "\n## Teacher (synthesize stage)\n",
        f"{synthesis.get('requests', 0)} requests, {synthesis.get('generated', 0)} solutions, "
        f"{synthesis.get('generated_tokens', 0)} generated tokens at {synthesis.get('tokens_per_s', 0.0)} tokens/s; "
        f"acceptance rate {synthesis.get('acceptance_rate', 0.0):.3f} ({synthesis.get('accepted', 0)} accepted"
        + (f", {refused} more with a right answer refused for a wrong line" if refused else "")
        + f"); D_syn: {synthesis.get('dsyn_records', 0)} records; {synthesis.get('duplicates', 0)} duplicates and "
        f"{synthesis.get('contaminated', 0)} contaminated dropped; cost {synthesis.get('cost_tokens', 0)} tokens.\n",
    ]
