"""What the report reads from a run's artifacts beyond the stage summaries: each evaluation's
per-question correctness (for the paired bootstrap), the responses and credit records the regime
diagnostics need, and the training steps; on the arithmetic task also the graded samples, the RFT
positives and the prepared questions, to score the credit stage's pits against the true first error
and to decide the task's regime gates. The thin I/O shell around `estimate`, `diagnostics` and
`credit_truth`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from negrl_operator.api.artifact import read_jsonl, read_records, stage_manifest
from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.api.stage_config import PREPARED_TEST, PREPARED_TRAIN, PREPARED_VALIDATION
from negrl_operator.reconcile.graph import BASE_POLICY, StageNode, stage_graph, training_source
from negrl_operator.report import credit_truth, diagnostics
from negrl_operator.report.comparison import Comparison, CurveRise, compare_to_sft, curve_rise
from negrl_operator.report.estimate import accuracy_intervals, correctness_tables
from negrl_operator.report.training import Collapse
from negrl_sampler.arithmetic import parse_problem


@dataclass
class Evidence:
    comparisons: list[Comparison] = field(default_factory=list)
    seeds: list[dict] = field(default_factory=list)   # one diagnostics row per seed
    gates: list[dict] = field(default_factory=list)
    sft_steps: dict[str, int] = field(default_factory=dict)  # SFT policy -> optimizer steps
    sft_selected: dict[str, float] = field(default_factory=dict)  # SFT policy -> epoch of the kept checkpoint
    split: str = "test"
    intervals: dict = field(default_factory=dict)  # (method, multiplier) -> (accuracy, low, high)
    rise: CurveRise | None = None  # SFT at the largest sweep point vs at n: no multiplier unless it rises
    credit_truth: dict | None = None  # arithmetic: {"seeds": {seed: figures}, "pooled": figures}


def _records(root: Path, name: str) -> list[dict]:
    return list(read_records(root / name)) if stage_manifest(root / name) else []


def _answers(root: Path, split: str) -> dict[str, str]:
    path = root / "prepare" / split
    return {q["id"]: q["answer"] for q in read_jsonl(path)} if path.exists() else {}


def gather(experiment: NegRLExperiment, workdir: Path, summaries: dict[str, dict],
           collapses: list[Collapse] | None = None) -> Evidence:
    """`collapses`: the DPO stages' collapse checks (`training.health`), an input of the arithmetic gates."""
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
    evidence = Evidence(comparisons=compare_to_sft(tables), split=split, intervals=accuracy_intervals(tables),
                        rise=curve_rise(tables))
    sft_nodes = [node.name for node in nodes if node.role == "sft" and node.name != BASE_POLICY]
    evidence.sft_steps = {name: summaries.get(name, {}).get("steps") for name in sft_nodes}
    evidence.sft_selected = {name: summaries[name]["selected_epoch"] for name in sft_nodes
                             if "selected_epoch" in summaries.get(name, {})}
    _diagnose(evidence, experiment, nodes, root, summaries, sft_test, collapses)
    return evidence


def _diagnose(evidence: Evidence, experiment: NegRLExperiment, nodes: list[StageNode], root: Path,
              summaries: dict[str, dict], sft_test: dict[int, list[dict]], collapses: list[Collapse] | None) -> None:
    spec = experiment.spec
    sequence = spec.data.task == "sequence"
    held_out = _answers(root, PREPARED_VALIDATION if evidence.split == "validation" else PREPARED_TEST)
    train_answers = _answers(root, PREPARED_TRAIN)
    by_seed = {seed: {n.role: n.name for n in nodes if n.seed == seed} for seed in spec.seeds}
    tests, trains, censuses, train_of = [], [], [], {}
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
        train_of[seed] = train.accuracy if train and train.questions else None
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
    if spec.data.source.kind == "arithmetic":
        sft = {seed: test.accuracy if test.questions else None for seed, test in zip(by_seed, tests, strict=True)}
        _arithmetic(evidence, by_seed, root, root / training_source(experiment.spec), sft, train_of, collapses)


def _finished(root: Path, names: dict[str, str], role: str) -> list[dict] | None:
    """The records of the seed's stage with `role`; None when the run has no such stage or it did not finish."""
    return _records(root, names[role]) if role in names and stage_manifest(root / names[role]) else None


def _rft_positives(root: Path, names: dict[str, str]) -> list[dict] | None:
    """rft.jsonl of the seed's pairs stage that wrote one (PAIR_FILES); None when none did."""
    for role in ("rft-data", "step-pairs"):
        manifest = stage_manifest(root / names[role]) if role in names else None
        if manifest and "rft" in manifest.get("files", {}):
            return list(read_jsonl(root / names[role] / manifest["files"]["rft"]))
    return None


def _problems(d_syn: Path, wanted: set[str]) -> dict:
    """The problems of the training questions (D_syn) the credit records and RFT positives answer."""
    path = d_syn / PREPARED_TRAIN
    questions = {q["id"]: q["question"] for q in read_jsonl(path)} if path.exists() else {}
    return {qid: parse_problem(questions[qid]) for qid in wanted if qid in questions}


def _truth_figures(problems: dict, credit: list[dict], positives: list[dict] | None) -> dict:
    cost = diagnostics.credit_cost(credit)
    rft = (credit_truth.rft_line_errors(problems, positives) if positives is not None
           else dict.fromkeys(credit_truth.RFT_KEYS))
    return {**credit_truth.tally(credit_truth.judge_records(problems, credit)), **rft,
            "rollouts_per_negative": round(cost["rollouts_per_negative"], 2),
            "tokens_per_negative": round(cost["tokens_per_negative"], 1)}


def _arithmetic(evidence: Evidence, by_seed: dict[int, dict[str, str]], root: Path, d_syn: Path,
                sft: dict[int, float | None], train: dict[int, float | None], collapses: list[Collapse] | None) -> None:
    """Credit against the true first error, per seed and pooled, and the task's regime gates; `d_syn` is
    the folder of the training questions sampled (prepare's, or the teacher's synthesize stage's)."""
    loaded = {seed: (_finished(root, names, "credit"), _finished(root, names, "sample"), _rft_positives(root, names))
              for seed, names in by_seed.items()}
    wanted = {r["question_id"] for credit, _, positives in loaded.values() for r in (credit or []) + (positives or [])}
    problems = _problems(d_syn, wanted)
    figures, regimes = {}, []
    for seed, (credit, samples, positives) in loaded.items():
        figures[seed] = _truth_figures(problems, credit or [], positives)
        pits = None if credit is None else (figures[seed]["hits"], figures[seed]["pits"])
        both = None if samples is None else diagnostics.both_answers(samples)
        regimes.append(diagnostics.SeedRegime(seed, sft[seed], train[seed], both, pits))
    every = list(loaded.values())
    pooled_positives = None if all(p is None for _, _, p in every) else [r for _, _, p in every for r in p or []]
    pooled = _truth_figures(problems, [r for credit, _, _ in every for r in credit or []], pooled_positives)
    evidence.credit_truth = {"seeds": {str(seed): row for seed, row in figures.items()}, "pooled": pooled}
    evidence.gates = diagnostics.arithmetic_gates(evidence.rise, regimes, collapses)


def split_name(experiment: NegRLExperiment) -> str:
    return experiment.spec.stages.eval.split


def science_json(evidence: Evidence) -> dict:
    return {"split": evidence.split, "comparisons": [c.as_dict() for c in evidence.comparisons],
            "sft_rise": None if evidence.rise is None else evidence.rise.as_dict(),
            "diagnostics": {"seeds": evidence.seeds, "gates": evidence.gates}, "sft_steps": evidence.sft_steps,
            "sft_selected_epoch": evidence.sft_selected, "credit_truth": evidence.credit_truth}


def sweep_sentence(spec, evidence: Evidence) -> str:
    """How the SFT points were trained: every point consumes its own data (the x axis is distinct
    examples), with the steps each ran and the checkpoint kept on validation."""
    params, size = spec.stages.sft.params, spec.data.synthetic_size
    floor = f", at least {params.min_steps} steps" if params.min_steps else ""
    cap = f", at most {params.max_steps} steps" if params.max_steps else ""
    kept = ("the checkpoint with the best validation accuracy (scored every "
            f"{spec.stages.sft.select.every_epochs} epochs) is evaluated" if spec.stages.sft.select
            else "the last checkpoint is evaluated")
    points = [1, *spec.sweep.sft_multipliers]
    distinct = ", ".join(f"{k * size}" for k in points) if size else "all"
    return (f"SFT sweep: each point trains {params.epochs:g} epochs over its own questions{floor}{cap}; {kept}. "
            f"Distinct examples per point: {distinct}. Optimizer steps: {evidence.sft_steps}"
            + (f"; kept checkpoint (epoch): {evidence.sft_selected}" if evidence.sft_selected else "") + ".")


def science_markdown(evidence: Evidence, spec) -> list[str]:
    """The report's statistics notes and the regime diagnostics section."""
    lines = [f"\n{sweep_sentence(spec, evidence)}\n"]
    if spec.stages.pairs.match_counts:
        lines.append("Outcome DPO and per-step DPO train on pairs built from the same negatives with the same chosen "
                     "responses (pairs.matchCounts): the two differ only in where the rejected side is cut; "
                     "pairs and optimizer steps per seed are in the diagnostics (outcome/step).\n")
    lines += ["\n## Regime diagnostics (pi_sft)\n",
              f"held-out: the {evidence.split} split; train: pi_sft's own training questions; first move: the "
              "response starts with the answer's first two tokens; usable pit: a negative whose pit makes a "
              "pair; pit histogram: step -> negatives; rollouts and tokens the credit stage spent per "
              "scanned negative.\n",
              diagnostics.markdown(evidence.seeds, evidence.gates if spec.data.task == "sequence" else [])]
    if spec.data.source.kind == "arithmetic":
        lines += ["\n## Regime gates of the arithmetic task\n",
                  "Each gate per seed where every seed must pass, and pooled over seeds (\"all\"); \"n/a\": the "
                  "run has no input for it (never a PASS).\n", diagnostics.gate_markdown(evidence.gates)]
        if evidence.credit_truth is not None:
            lines.append(credit_truth.markdown(evidence.credit_truth["seeds"], evidence.credit_truth["pooled"]))
    return lines
