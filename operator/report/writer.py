"""What `negrl run` leaves at the end: results.json, report.md, the accuracy plot and a table in
the terminal, built from the evaluation stages' summaries."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.reconcile.graph import BASE_POLICY, stage_graph
from negrl_operator.report.comparison import FLAT, CurveRise
from negrl_operator.report.estimate import BOOTSTRAP_REPLICATES, PolicyResult, sft_curve_points, summarise
from negrl_operator.report.evidence import gather, science_json, science_markdown, split_name
from negrl_operator.report.figure import write_plot
from negrl_operator.report.significance import ALPHA, FEW_SEEDS
from negrl_operator.report.table import markdown_table, results_table, teacher_lines
from negrl_operator.report.training import PLOT as TRAINING_PLOT
from negrl_operator.report.training import health, load_curves, markdown_lines, write_training_plot

PLOT = "accuracy_vs_dsyn.png"


def policy_results(experiment: NegRLExperiment, summaries: dict[str, dict]) -> list[PolicyResult]:
    nodes = stage_graph(experiment.spec)
    producers = {node.produces: node for node in nodes if node.produces}
    results = []
    for node in nodes:
        summary = summaries.get(node.name, {})
        if node.role != "eval" or "pass_at_1" not in summary:  # eval-train: the memorisation check
            continue
        producer = producers.get(node.serves)
        method = producer.role if producer else BASE_POLICY
        results.append(PolicyResult(method, producer.multiplier if producer else 1, node.seed,
                                    summary["pass_at_1"], summary.get("pass_at_k")))
    return results


def distinct_examples(synthetic_size: int | None, multipliers: list[int]) -> dict[int, int] | None:
    """Distinct synthetic examples each SFT sweep point trains on: its nested prefix, k x |D_syn|."""
    return None if synthetic_size is None else {k: k * synthetic_size for k in multipliers}


def statistics_text(rise: CurveRise | None, seeds: int, methods: int) -> str:
    """What the table's statistics are, and what SFT's curve allows, in the report's words."""
    if rise is None:
        curve = "There is no SFT sweep point beyond n, so no multiplier is defined."
    else:
        low, high = rise.difference_ci
        curve = (f"SFT's curve from n to {rise.largest}x: {rise.difference:+.3f} [{low:+.3f}, {high:+.3f}], "
                 + ("it rises (interval above 0), so multipliers are defined." if rise.rises else
                    f"flat (interval not above 0), so every multiplier reads \"{FLAT}\"; the differences "
                    "to SFT at n and their significance still hold."))
    t_note = (f"With fewer than {FEW_SEEDS} seeds the table also gives a Student-t 95% interval over the "
              "per-seed paired differences (each seed's accuracy minus SFT at n's on the same seed, over all "
              "questions; t with seeds - 1 degrees of freedom; '-' with one seed). " if seeds < FEW_SEEDS else "")
    return (
        f"Statistics: each method's difference to SFT at n has a 95% interval from a paired bootstrap over "
        f"seeds x test questions ({BOOTSTRAP_REPLICATES} replicates; every policy is read on the same resampled "
        f"seeds and questions, so the SFT sweep points pair too). {t_note}Significance: a two-sided bootstrap "
        f"p-value (twice the smaller share of replicates on either side of 0, at least 1/{BOOTSTRAP_REPLICATES}), "
        f"Holm-corrected across the {methods} methods compared to SFT at n (alpha {ALPHA}); \"n.s.\" and the "
        "significance of every label follow the Holm-adjusted p printed in the table. Effective data multiplier: "
        "only where SFT at the largest sweep point beats SFT at n (paired interval above 0); then the accuracy "
        "where the method lands is read off SFT's curve made monotone (running max), interpolated piecewise "
        "log-linearly (log |D_syn| linear in accuracy) between neighbouring sweep points, all points used, never "
        "extrapolated; its interval comes from the same bootstrap replicates. \"< 1x\": significantly worse "
        "than SFT at n; \"> Kx\": significantly better than SFT at the largest point K. " + curve + "\n")


def write_report(experiment: NegRLExperiment, summaries: dict, workdir: Path, wall_s: float, console: Console) -> None:
    results = policy_results(experiment, summaries)
    summaries_by_method = summarise(results)
    curves = load_curves(workdir / "artifacts", [n.name for n in stage_graph(experiment.spec) if n.kind == "train"])
    checks = health(curves)
    evidence = gather(experiment, workdir, summaries, collapses=checks)
    rows = results_table(summaries_by_method, evidence.comparisons)
    size = experiment.spec.data.synthetic_size
    sweep = sorted(k for method, k in evidence.intervals if method == "sft")
    curve = sft_curve_points(evidence.intervals, distinct_examples(size, sweep))
    write_plot(workdir / PLOT, summaries_by_method, curve, evidence.comparisons, evidence.rise)
    plotted = write_training_plot(curves, workdir / TRAINING_PLOT)
    (workdir / "results.json").write_text(json.dumps(
        {"experiment": experiment.metadata.name, "wall_s": round(wall_s, 1), "synthetic_size": size,
         "policies": [r.__dict__ for r in results], "table": rows, **science_json(evidence),
         "sft_curve": [point.__dict__ for point in curve],
         "training_health": [check.as_dict() for check in checks]}, indent=2))
    counts = {name: s for name, s in summaries.items()
              if name.split("-s")[0] in {"synthesize", "sample", "credit", "step-pairs", "rft-data"}}
    untrained = sorted(name for name, summary in summaries.items() if summary.get("untrained"))
    report = [
        f"# NegRL run: {experiment.metadata.name}\n",
        f"Wall time: {wall_s / 60:.1f} min. |D_syn| = {size}. Seeds: {experiment.spec.seeds}.\n",
        f"{split_name(experiment).capitalize()} accuracy (greedy pass@1, mean ± sample std over seeds), each "
        "method's difference to SFT at n, and its effective data multiplier: how much more SFT data reaches "
        "the same accuracy on SFT's curve.\n",
        statistics_text(evidence.rise, len(experiment.spec.seeds), len(evidence.comparisons)),
        markdown_table(rows),
        *([f"\nUntrained (no training example; the policy is its initial model): {', '.join(untrained)}\n"]
          if untrained else []),
        *science_markdown(evidence, experiment.spec),
        f"\n![accuracy vs |D_syn|]({PLOT})\n",
        *markdown_lines(checks, TRAINING_PLOT if plotted else None),
        *teacher_lines(summaries.get("synthesize")),
        "\n## Stage summaries\n",
        "```json\n" + json.dumps(counts, indent=2, sort_keys=True) + "\n```\n",
    ]
    (workdir / "report.md").write_text("\n".join(report))
    table = Table(title=f"{experiment.metadata.name}: {split_name(experiment)} accuracy")
    for column in rows[0] if rows else ["method"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    console.print(f"report: {workdir / 'report.md'}  plot: {workdir / PLOT}")
    if experiment.spec.data.source.kind == "arithmetic":
        console.print("regime gates: " + ", ".join(f"{sum(g['result'] == result for g in evidence.gates)} {result}"
                                                   for result in ("PASS", "FAIL", "n/a")) + " (report.md)")
    for check in (check for check in checks if check.collapsed):
        console.print(f"[bold red]DPO collapse[/]: {check.stage}: chosen log-prob fell {check.drop:.1f} nats"
                      + ("" if check.drop_per_token is None else f", {check.drop_per_token:.2f} per token") + " (report.md)")
