"""`negrl pairs`: the RFT set, per-step DPO pairs and outcome DPO pairs, in one folder.

Files (PAIR_FILES, one per requested output): rft.jsonl (`Demonstration`), outcome_pairs.jsonl and
step_pairs.jsonl (`PreferencePair`), each written atomically, then manifest.json (its `files` maps
each output to its file; `records` lists them). The work is pure and cheap, so it is not split:
shard 0 builds everything and other shards have nothing to do. With pairs.matchCounts and both pair
kinds requested, the two pair files hold the same negatives in the same order (differing only in the
cut: `same_negative_pairs`), and the summary says so (`matched: same-negatives`, `negatives_used`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from negrl_operator.api.artifact import (
    MANIFEST,
    inputs_hash,
    read_records,
    stage_done,
    temporary_beside,
    write_json_atomic,
)
from negrl_operator.api.stage_config import PAIR_FILES, PairsStageConfig
from negrl_operator.api.termination import report_summary
from negrl_sampler.pairing import outcome_pairs, rft_set, same_negative_pairs, step_pairs, unknown_end
from negrl_sampler.record import CreditRecord, PreferencePair, Sample
from negrl_sampler.stages.rollout import load_config, load_questions


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = temporary_beside(path)
    with os.fdopen(descriptor, "w") as handle:
        handle.writelines(json.dumps(record, sort_keys=True) + "\n" for record in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def build_outputs(config: PairsStageConfig) -> tuple[dict[str, list[dict]], dict]:
    """The requested outputs and the counts of what was left out (and, matched, of what was used).
    With pairs.matchCounts and both pair kinds requested, both come from the same negatives
    (`same_negative_pairs`) under the smaller of the two per-question caps."""
    samples = [Sample.model_validate(record) for record in read_records(config.samples_dir)]
    params = config.params
    matched = params.match_counts and {"outcome", "step"} <= set(config.outputs)
    built: dict[str, list] = {}
    notes: dict = {}
    if "rft" in config.outputs:
        built["rft"] = rft_set(samples, params.rft_per_question)
    if "outcome" in config.outputs and not matched:
        built["outcome"] = outcome_pairs(samples, params.outcome_pairs_per_question, params.seed)
    if "step" in config.outputs:
        credits = [CreditRecord.model_validate(record) for record in read_records(config.credit_dir)]
        questions = {question.id: question for question in load_questions(config.questions)}
        notes["dropped_unfinished_pit_at_end"] = sum(1 for record in credits if unknown_end(record))
        if matched:
            cap = min(params.step_pairs_per_question, params.outcome_pairs_per_question)
            built["step"], built["outcome"] = same_negative_pairs(
                credits, samples, questions, params.chosen_source, cap, params.seed)
            notes |= matched_notes(credits, built["outcome"])
        else:
            built["step"] = step_pairs(credits, samples, questions, params.chosen_source,
                                       params.step_pairs_per_question, params.seed)
    outputs = {name: [record.model_dump(mode="json") for record in built[name]]
               for name in ("rft", "outcome", "step") if name in built}
    return outputs, notes


def matched_notes(credits: list[CreditRecord], outcome: list[PreferencePair]) -> dict:
    """What the same-negative pairs used: negatives scanned by credit, those with a pit, those used
    (one per pair of each kind), and outcome twins whose full text was cut by max_tokens (no EOS)."""
    return {
        "matched": "same-negatives",
        "negatives_scanned": len(credits),
        "negatives_with_pit": sum(1 for record in credits if record.pit is not None),
        "negatives_used": len(outcome),
        "outcome_rejected_unfinished": sum(1 for pair in outcome if not pair.rejected_eos),
    }


def pair_summary(outputs: dict[str, list[dict]], chosen_source: str) -> dict:
    summary: dict = {"chosen_source": chosen_source}
    for name, records in outputs.items():
        summary[name] = len(records)
        summary[f"{name}_questions"] = len({record["question_id"] for record in records})
    return summary


def main(argv: list[str] | None = None) -> int:
    config = load_config(argv, "pairs", PairsStageConfig)
    head = {"stage": "pairs", "shard": f"{config.shard_index}/{config.shard_count}",
            "output_dir": config.output_dir}
    inputs = inputs_hash(config)
    if config.shard_index != 0:
        report_summary({**head, "skipped": "pairs are built by shard 0"})
        return 0
    if stage_done(config.output_dir, inputs):
        report_summary({**head, "resumed": "stage already complete"})
        return 0
    try:
        outputs, notes = build_outputs(config)
    except (FileNotFoundError, ValueError) as error:
        report_summary({**head, "error": f"{type(error).__name__}: {error}"})
        return 1
    out = Path(config.output_dir)
    files = {name: PAIR_FILES[name] for name in outputs}
    for name, records in outputs.items():
        write_jsonl_atomic(out / files[name], records)
    summary = {**pair_summary(outputs, config.params.chosen_source), **notes}
    write_json_atomic(out / MANIFEST, {"inputs_hash": inputs, "shards": 1, "files": files,
                                       "records": list(files.values()), "summary": summary})
    report_summary({**head, **summary, "complete": True})
    return 0
