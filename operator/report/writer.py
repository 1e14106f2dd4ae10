"""What `negrl run` leaves at the end: results.json, report.md, the accuracy plot and a table in
the terminal, built from the evaluation stages' summaries."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.reconcile.graph import BASE_POLICY, stage_graph
from negrl_operator.report.estimate import PolicyResult, summarise
from negrl_operator.report.evidence import gather, science_json, science_markdown, split_name
from negrl_operator.report.figure import write_plot
from negrl_operator.report.table import markdown_table, results_table
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


def write_report(experiment: NegRLExperiment, summaries: dict, workdir: Path, wall_s: float, console: Console) -> None:
    results = policy_results(experiment, summaries)
    summaries_by_method = summarise(results)
    evidence = gather(experiment, workdir, summaries)
    rows = results_table(summaries_by_method, evidence.comparisons)
    size = experiment.spec.data.synthetic_size
    write_plot(summaries_by_method, size, workdir / PLOT, evidence.intervals, evidence.comparisons)
    curves = load_curves(workdir / "artifacts", [n.name for n in stage_graph(experiment.spec) if n.kind == "train"])
    checks, plotted = health(curves), write_training_plot(curves, workdir / TRAINING_PLOT)
    (workdir / "results.json").write_text(json.dumps(
        {"experiment": experiment.metadata.name, "wall_s": round(wall_s, 1), "synthetic_size": size,
         "policies": [r.__dict__ for r in results], "table": rows, **science_json(evidence),
         "training_health": [check.as_dict() for check in checks]}, indent=2))
    counts = {name: s for name, s in summaries.items() if name.split("-s")[0] in {"sample", "credit", "step-pairs", "rft-data"}}
    untrained = sorted(name for name, summary in summaries.items() if summary.get("untrained"))
    report = [
        f"# NegRL run: {experiment.metadata.name}\n",
        f"Wall time: {wall_s / 60:.1f} min. |D_syn| = {size}. Seeds: {experiment.spec.seeds}.\n",
        f"{split_name(experiment).capitalize()} accuracy (greedy pass@1, mean ± sample std over seeds), each "
        "method's difference to SFT at n with a 95% paired-bootstrap interval (seeds x questions), and its "
        "effective data multiplier: how much more SFT data reaches the same accuracy on SFT's curve (log "
        "interpolation), with its interval; n.s. where the difference's interval contains 0.\n",
        markdown_table(rows),
        *([f"\nUntrained (no training example; the policy is its initial model): {', '.join(untrained)}\n"]
          if untrained else []),
        *science_markdown(evidence, experiment.spec),
        f"\n![accuracy vs |D_syn|]({PLOT})\n",
        *markdown_lines(checks, TRAINING_PLOT if plotted else None),
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
    for check in (check for check in checks if check.collapsed):
        console.print(f"[bold red]DPO collapse[/]: {check.stage}: chosen log-prob fell {check.drop:.1f} nats"
                      + ("" if check.drop_per_token is None else f", {check.drop_per_token:.2f} per token") + " (report.md)")
