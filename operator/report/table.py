"""The results table of a run: one row per method (and SFT sweep point) with its accuracy, pass@k,
seeds and effective data multiplier, as plain rows and as markdown."""

from __future__ import annotations

from negrl_operator.report.estimate import MethodSummary, effective_multiplier, sft_curve


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
