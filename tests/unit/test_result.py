"""What the operator reads from real stage summaries: accuracy from the keys `negrl evaluate` writes,
failure messages that keep the exception's head, summaries that stay valid JSON within 4 KiB."""

import json

import pytest

from negrl_operator.api.status import StageStatus
from negrl_operator.api.termination import MAX_BYTES, report_summary, shorten, summary_line
from negrl_operator.reconcile.observation import PodReport, parse_summary
from negrl_operator.reconcile.result import failure_message, job_summary, merged_shards, results
from negrl_sampler.stages.evaluate import evaluation_counts, evaluation_figures

pytestmark = pytest.mark.unit

# four questions: greedy right on three, one unparseable; sampled (k=2) right at least once on two
RECORDS = [
    {"greedy_correct": True, "sampled_correct": 2, "samples": 2},
    {"greedy_correct": True, "sampled_correct": 1, "samples": 2},
    {"greedy_correct": True, "sampled_correct": 0, "samples": 2},
    {"greedy_correct": None, "sampled_correct": 0, "samples": 2},
]


def evaluate_termination_message(policy: str, records: list[dict], k: int, tmp_path) -> str:
    """The line the evaluate stage writes to /dev/termination-log (same functions, same order)."""
    counts = {"policy": policy, **evaluation_counts(records)}
    head = {"stage": "evaluate", "shard": "0/1", "output_dir": "/data/x/eval-" + policy}
    path = tmp_path / f"termination-{policy}"
    report_summary({**head, **counts, **evaluation_figures(counts, k), "complete": True}, str(path))
    return path.read_text()


def succeeded(kind: str, message: str, index: int = 0) -> PodReport:
    return PodReport(name=f"pod-{index}", job="job", index=index, phase="Succeeded", message=message,
                     exit_code=0, finished_at="2026-01-01T00:00:00Z")


def test_accuracy_of_a_real_evaluate_summary_reaches_the_results(tmp_path):
    stages = []
    for policy, records in (("sft", RECORDS), ("rft", RECORDS[:3] + [{**RECORDS[3], "greedy_correct": True}])):
        message = evaluate_termination_message(policy, records, 2, tmp_path)
        summary, missing = job_summary("evaluate", [succeeded("evaluate", message)], 1)
        assert missing == 0
        stages.append(StageStatus(name=f"eval-{policy}", kind="evaluate", state="Succeeded", summary=summary))
    found = results(stages, {"eval-sft": "sft", "eval-rft": "rft"})
    sft, rft = found.policies
    # sft: 3/4 greedy; Wilson 95% interval of 3/4 worked out by hand: (0.3006, 0.9544)
    assert (sft.policy, sft.accuracy, sft.pass_k, sft.k, sft.questions) == ("sft", 0.75, 0.5, 2, 4)
    assert (sft.accuracy_ci_low, sft.accuracy_ci_high) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    assert (rft.accuracy, rft.accuracy_ci_low, rft.accuracy_ci_high) == pytest.approx((1.0, 0.5101, 1.0), abs=1e-4)
    assert (found.best_policy, found.best_accuracy) == ("rft", 1.0)


def test_pair_counts_come_from_the_keys_the_pairs_stage_writes():
    summary = {"stage": "pairs", "rft": 12, "step": 5, "outcome": 5, "matched": "same-negatives"}
    stages = [StageStatus(name="step-pairs", kind="pairs", state="Succeeded", summary=summary)]
    counts = results(stages, {}).counts
    assert (counts.rft_examples, counts.step_pairs, counts.outcome_pairs) == (12, 5, 5)


COMPILER = "c++ -MMD -MF /tmp/build/cpu_adam.o.d " + " ".join(f"-I/usr/include/path{i}" for i in range(200))
ERROR = f"CalledProcessError: Command '['{COMPILER}']' returned non-zero exit status 1."


def test_shorten_keeps_the_exception_head_and_the_end():
    short = shorten(ERROR, 1024)
    assert len(short) <= 1024 and len(ERROR) > 3000
    assert short.startswith("CalledProcessError: Command '['c++ -MMD")
    assert short.endswith("returned non-zero exit status 1.")
    assert " […] " in short
    assert shorten("ValueError: bad\n") == "ValueError: bad"  # short texts stay whole (stripped)


def test_failure_message_of_a_long_error_keeps_head_and_tail():
    failed = PodReport("pod-0", "job", 0, "Failed", summary_line({"stage": "train", "error": ERROR}), 1,
                       "2026-01-01T00:00:00Z")
    message = failure_message([failed], "the Job failed")
    assert message.startswith("CalledProcessError: Command") and message.endswith("exit status 1.")
    assert len(message) <= 1024


def test_a_raw_log_tail_keeps_its_last_line():
    log = "\n".join(f"step {i} loss 0.5" for i in range(300)) + "\nRuntimeError: CUDA out of memory"
    assert parse_summary(log)["message"].endswith("RuntimeError: CUDA out of memory")


@pytest.mark.parametrize("summary", [
    {"stage": "train", "error": ERROR, "steps": 12, "final_loss": 0.5},
    {"stage": "credit", "error": "é" * 5000, "records_kept": 3},  # two bytes a character
    {"stage": "sample", "note": "x" * 5000, **{f"count_{i}": i for i in range(400)}},
])
def test_summary_over_4kib_stays_valid_json_with_its_head(summary):
    line = summary_line(summary)
    assert len(line.encode()) <= MAX_BYTES
    parsed = json.loads(line)
    assert parsed["stage"] == summary["stage"]
    if "error" in summary:
        assert parsed["error"][:12] == summary["error"][:12]
        assert all(parsed[k] == v for k, v in summary.items() if isinstance(v, int | float))


def test_summary_within_4kib_is_unchanged():
    summary = {"stage": "sample", "questions": 3, "policy": "sft", "pass_at_1_ci95": [0.1, 0.2]}
    assert json.loads(summary_line(summary)) == summary


@pytest.mark.parametrize(("kind", "shards", "merged"), [
    pytest.param("sample", [{"shard": "0/2", "questions": 3, "correct": 2, "complete": False},
                            {"shard": "1/2", "questions": 4, "correct": 0, "complete": True}],
                 {"shard": "0/2", "questions": 7, "correct": 2, "complete": False}, id="counts-add-up"),
    pytest.param("synthesize", [{"accepted": 1, "generated": 4, "acceptance_rate": 0.25},
                                {"accepted": 3, "generated": 4, "acceptance_rate": 0.75}],
                 {"accepted": 4, "generated": 8, "acceptance_rate": 0.5}, id="ratio-from-the-sums-not-summed"),
    pytest.param("evaluate", [{"pass_at_1": 0.5}, {"pass_at_1": 0.25}], {"pass_at_1": 0.5}, id="first-shard-only"),
    pytest.param("credit", [], {}, id="no-shard"),
])
def test_a_sharded_stage_has_one_summary(kind, shards, merged):
    assert merged_shards(kind, shards) == merged
