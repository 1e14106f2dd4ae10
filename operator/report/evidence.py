"""What the report reads from a run's artifacts beyond the stage summaries: each evaluation's
per-question correctness (for the paired bootstrap), the responses and credit records the regime
diagnostics need, and the training steps. The thin I/O shell around `estimate` and `diagnostics`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from negrl_operator.api.artifact import read_jsonl, read_records, stage_manifest
from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.api.stage_config import PREPARED_TEST, PREPARED_TRAIN, PREPARED_VALIDATION
from negrl_operator.reconcile.graph import BASE_POLICY, StageNode, stage_graph
from negrl_operator.report import diagnostics
from negrl_operator.report.estimate import Comparison, accuracy_intervals, compare_to_sft, correctness_tables


@dataclass
class Evidence:
    comparisons: list[Comparison] = field(default_factory=list)
    seeds: list[dict] = field(default_factory=list)   # one diagnostics row per seed
    gates: list[dict] = field(default_factory=list)
    sft_steps: dict[str, int] = field(default_factory=dict)  # SFT policy -> optimizer steps
    split: str = "test"
    intervals: dict = field(default_factory=dict)  # (method, multiplier) -> (accuracy, low, high)


def _records(root: Path, name: str) -> list[dict]:
    return list(read_records(root / name)) if stage_manifest(root / name) else []


def _answers(root: Path, split: str) -> dict[str, str]:
    path = root / "prepare" / split
    return {q["id"]: q["answer"] for q in read_jsonl(path)} if path.exists() else {}


def gather(experiment: NegRLExperiment, workdir: Path, summaries: dict[str, dict]) -> Evidence:
    spec, root = experiment.spec, workdir / "artifacts"
    nodes = stage_graph(spec)
    producers = {node.produces: node for node in nodes if node.produces}
    evaluations, sft_test = [], {}
    for node in nodes:
        if node.role != "eval":
            continue
        records = _records(root, node.name)
        producer = producers.get(node.serves)
        if producer is None or not records:  # `base` is evaluated once: it pairs with no seed
            continue
        evaluations.append((producer.role, producer.multiplier, node.seed,
                            {r["question_id"]: r["greedy_correct"] is True for r in records}))
        if producer.role == "sft" and producer.multiplier == 1:
            sft_test[node.seed] = records
    split = "validation" if spec.stages.eval.split == "validation" else "test"
    tables = correctness_tables(evaluations)
    evidence = Evidence(comparisons=compare_to_sft(tables), split=split, intervals=accuracy_intervals(tables))
    evidence.sft_steps = {node.name: summaries.get(node.name, {}).get("steps") for node in nodes
                          if node.role == "sft" and node.name != BASE_POLICY}
    _diagnose(evidence, experiment, nodes, root, summaries, sft_test)
    return evidence


def _diagnose(evidence: Evidence, experiment: NegRLExperiment, nodes: list[StageNode], root: Path,
              summaries: dict[str, dict], sft_test: dict[int, list[dict]]) -> None:
    spec = experiment.spec
    sequence = spec.data.task == "sequence"
    held_out = _answers(root, PREPARED_VALIDATION if evidence.split == "validation" else PREPARED_TEST)
    train_answers = _answers(root, PREPARED_TRAIN)
    by_seed = {seed: {n.role: n.name for n in nodes if n.seed == seed} for seed in spec.seeds}
    tests, trains, censuses = [], [], []
    for seed, names in by_seed.items():
        test = diagnostics.move_accuracy(sft_test.get(seed, []), held_out)
        train = diagnostics.move_accuracy(_records(root, names.get("eval-train", "")), train_answers) \
            if "eval-train" in names else None
        credit = _records(root, names["credit"]) if "credit" in names else []
        census, cost = diagnostics.pit_census(credit), diagnostics.credit_cost(credit)
        pairs = summaries.get(names.get("step-pairs", ""), {})
        outcome_pairs = pairs.get("outcome", summaries.get(names.get("rft-data", ""), {}).get("outcome"))
        steps = [summaries.get(names.get(role, ""), {}).get("steps") for role in ("outcome-dpo", "step-dpo")]
        tests.append(test)
        trains += [train] if train and train.questions else []
        censuses += [census] if credit else []
        evidence.seeds.append({
            "seed": seed, "test_accuracy": round(test.accuracy, 3),
            "first_move": round(test.first_move, 3) if sequence else "-",
            "given_first_move": "-" if not sequence or test.given_first_move is None else round(test.given_first_move, 3),
            "train_accuracy": round(train.accuracy, 3) if train and train.questions else "-",
            "negatives": census["negatives"], "usable_pit_share": round(census["usable_pit_share"], 3),
            "pit_histogram": census["pit_histogram"], "no_pit": census["no_pit"], "pit_at_end": census["pit_at_end"],
            "pairs": f"{outcome_pairs if outcome_pairs is not None else '-'}/{pairs.get('step', '-')}",
            "dpo_steps": "/".join("-" if s is None else str(s) for s in steps),
            "rollouts_per_negative": round(cost["rollouts_per_negative"], 2),
            "tokens_per_negative": round(cost["tokens_per_negative"], 1),
        })
    degree = spec.data.source.degree if sequence else None
    evidence.gates = diagnostics.gates(degree, tests if sequence else [], trains, censuses)


def split_name(experiment: NegRLExperiment) -> str:
    return experiment.spec.stages.eval.split


def science_json(evidence: Evidence) -> dict:
    return {"split": evidence.split, "comparisons": [c.__dict__ for c in evidence.comparisons],
            "diagnostics": {"seeds": evidence.seeds, "gates": evidence.gates}, "sft_steps": evidence.sft_steps}


def science_markdown(evidence: Evidence, spec) -> list[str]:
    """The report's statistics notes and the regime diagnostics section."""
    steps = sorted({steps for steps in evidence.sft_steps.values() if steps is not None})
    if spec.sweep.sft_steps:
        sweep = f"compute-matched: every SFT ran {spec.sweep.sft_steps} optimizer steps (measured: {steps})"
    else:
        sweep = f"epoch-based (steps grow with |D_syn|): SFT optimizer steps {evidence.sft_steps}"
    lines = [f"\nSFT sweep: {sweep}.\n"]
    if spec.stages.pairs.match_counts:
        lines.append("Outcome DPO and per-step DPO train on the same number of pairs (pairs.matchCounts); "
                     "pairs and optimizer steps per seed are in the diagnostics (outcome/step).\n")
    lines += ["\n## Regime diagnostics (pi_sft)\n",
              f"held-out: the {evidence.split} split; train: pi_sft's own training questions; first move: the "
              "response starts with the answer's first two tokens; usable pit: a negative whose pit makes a "
              "pair; pit histogram: step -> negatives; rollouts and tokens the credit stage spent per "
              "scanned negative.\n",
              diagnostics.markdown(evidence.seeds, evidence.gates if spec.data.task == "sequence" else [])]
    return lines
