"""DPO health: the collapse flag from a hand-made train_log.jsonl, and the scalars the trackers get."""

from __future__ import annotations

import json

import pytest

from negrl_operator.report.training import collapse_check, health, markdown_lines, parse_train_log
from negrl_trainer.tracking import flat_params, step_scalars, summary_scalars

pytestmark = pytest.mark.unit


def train_log(chosen: list[float], rejected: list[float], tokens: int = 100) -> str:
    """train_log.jsonl as loop.py writes it (DPO keys), one record per step; chosen answers of
    `tokens` tokens (chosen_nll is the per-token mean of chosen_logp)."""
    return "".join(json.dumps({"step": i + 1, "loss": 0.69, "learning_rate": 1e-6, "grad_norm": 1.0, "tokens": 64,
                               "tokens_per_second": 100.0, "epoch": 0.1, "chosen_reward": 0.0, "rejected_reward": 0.0,
                               "preference_accuracy": 0.5, "chosen_nll": -c / tokens, "reward_margin": 0.1 * i,
                               "chosen_logp": c, "rejected_logp": r}) + "\n"
                   for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)))


def test_falling_chosen_log_prob_is_flagged():
    # 20 steps: windows of 2 steps; chosen -40,-40 at the start, -52,-54 at the end: a drop of 13 nats
    chosen = [-40.0, -40.0] + [-45.0] * 16 + [-52.0, -54.0]
    rejected = [-60.0, -62.0] + [-80.0] * 16 + [-90.0, -94.0]
    check = collapse_check("step-dpo-s1", parse_train_log(train_log(chosen, rejected)), threshold=5.0)
    assert (check.chosen_start, check.chosen_end, check.drop) == (-40.0, -53.0, 13.0)
    assert (check.rejected_start, check.rejected_end) == (-61.0, -92.0)
    assert check.collapsed
    assert check.as_dict() == {"stage": "step-dpo-s1", "chosen_start": -40.0, "chosen_end": -53.0,
                               "rejected_start": -61.0, "rejected_end": -92.0, "threshold": 5.0,
                               "tokens": 100.0, "per_token_threshold": 0.25, "drop": 13.0, "drop_per_token": 0.13,
                               "collapsed": True}


def test_a_margin_won_by_pushing_rejected_down_is_healthy():
    chosen, rejected = [-40.0, -39.0, -41.0, -38.0], [-60.0, -70.0, -80.0, -90.0]  # windows of one step
    check = collapse_check("outcome-dpo", parse_train_log(train_log(chosen, rejected)), threshold=5.0)
    assert check.drop == -2.0 and not check.collapsed


def test_the_threshold_is_strict():
    check = collapse_check("step-dpo", parse_train_log(train_log([-10.0, -15.0], [-20.0, -20.0])), threshold=5.0)
    assert check.drop == 5.0 and not check.collapsed


@pytest.mark.parametrize(("chosen", "tokens", "collapsed"), [
    ([-0.8, -5.6], 6, True),  # a 6-token path: 4.8 nats < 5, but 0.8 per token (each token 45% as likely)
    ([-0.8, -2.3], 6, False),  # exactly 0.25 per token: strict
    ([-0.8, -2.4], 6, True),  # 0.267 per token
    ([-40.0, -44.0], 8, True),  # 4 nats over 8 tokens: 0.5 per token
    ([-40.0, -44.0], 100, False),  # the same 4 nats over 100 tokens
])
def test_a_short_answer_is_flagged_by_its_drop_per_token(chosen, tokens, collapsed):
    check = collapse_check("outcome-dpo-s0", parse_train_log(train_log(chosen, [-3.0, -9.0], tokens)), threshold=5.0)
    assert check.tokens == pytest.approx(tokens)
    assert check.collapsed is collapsed


def test_a_log_without_chosen_nll_is_judged_on_nats_alone():
    records = [{"step": 1, "chosen_logp": -0.8}, {"step": 2, "chosen_logp": -5.6}]
    check = collapse_check("outcome-dpo", records, threshold=5.0)
    assert (check.tokens, check.drop_per_token, check.collapsed) == (None, None, False)
    assert markdown_lines([check], None)[1] == "- outcome-dpo: healthy: chosen log-prob changed by -4.80 nats (chosen -0.80 -> -5.60)"


def test_stages_without_log_probs_and_torn_lines():
    sft = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert collapse_check("sft", sft) is None
    text = train_log([-1.0, -9.0], [-2.0, -3.0]) + '{"step": 3, "chos'  # a killed run's last line
    assert len(parse_train_log(text)) == 2
    checks = health({"sft": sft, "step-dpo": parse_train_log(text)}, threshold=5.0)
    assert [(c.stage, c.collapsed) for c in checks] == [("step-dpo", True)]
    lines = markdown_lines(checks, "training_curves.png")
    assert lines[1] == "![training curves](training_curves.png)\n"
    assert lines[2] == ("- step-dpo: **COLLAPSE**: chosen log-prob changed by -8.00 nats, -0.08 per token (limits: 5 nats, "
                        "0.25 per token) (chosen -1.00 -> -9.00, rejected -2.00 -> -3.00)")


def test_scalar_names_for_the_trackers():
    record = parse_train_log(train_log([-40.0], [-60.0], tokens=40))[0]
    assert step_scalars(record) == {
        "train/loss": 0.69, "train/learning_rate": 1e-6, "train/grad_norm": 1.0, "train/tokens_per_second": 100.0,
        "dpo/chosen_reward": 0.0, "dpo/rejected_reward": 0.0, "dpo/reward_margin": 0.0,
        "dpo/preference_accuracy": 0.5, "dpo/chosen_logp": -40.0, "dpo/rejected_logp": -60.0, "dpo/nll": 1.0}
    assert step_scalars({"step": 1, "loss": 2.0, "grad_norm": None}) == {"train/loss": 2.0}
    assert summary_scalars("evaluate", {"policy": "sft", "questions": 8, "pass_at_1": 0.25, "complete": True}) == {
        "evaluate/questions": 8.0, "evaluate/pass_at_1": 0.25}
    assert summary_scalars("sample", {"samples": 8, "correct": 2})["sample/correct_ratio"] == 0.25
    assert flat_params({"stage": "dpo", "params": {"beta": 0.1, "stop": ["\n"]}, "x": None}) == {
        "stage": "dpo", "params.beta": "0.1", "params.stop": '["\\n"]', "x": "None"}
