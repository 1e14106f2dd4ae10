"""The results table of a run: one row per method (and SFT sweep point) with its accuracy, pass@k,
seeds, its difference to SFT at n and its effective data multiplier (from the paired bootstrap when
there is one), as plain rows and as markdown."""

from __future__ import annotations

from negrl_operator.report.estimate import Comparison, MethodSummary, effective_multiplier, sft_curve


def _interval(low: float, high: float, digits: int = 3) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def results_table(summaries: list[MethodSummary], comparisons: list[Comparison] | None = None) -> list[dict[str, str]]:
    curve = sft_curve(summaries)
    by_method = {c.method: c for c in comparisons or []}  # each method's policy at n
    rows = []
    for summary in summaries:
        comparison = by_method.get(summary.method) if summary.multiplier == 1 else None
        if summary.method == "sft":
            multiplier = f"{summary.multiplier}x (by definition)"
        elif summary.multiplier != 1:
            multiplier = "-"
        elif comparison is not None:
            multiplier = comparison.label
        else:
            multiplier = effective_multiplier(curve, summary.mean)[1]
        row = {
            "method": summary.method if summary.multiplier == 1 else f"{summary.method} @ {summary.multiplier}x",
            "accuracy": f"{summary.mean:.3f} ± {summary.std:.3f}",
            "pass@k": "-" if summary.pass_at_k is None else f"{summary.pass_at_k:.3f}",
            "seeds": str(summary.seeds),
        }
        if comparisons is not None:
            row["Δ vs SFT@n [95% CI]"] = ("-" if comparison is None else
                                          f"{comparison.difference:+.3f} {_interval(*comparison.difference_ci)}")
        row["effective data multiplier"] = multiplier
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no evaluated policy)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[column] for column in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"
