"""Checkpoint selection on validation: which steps are scored, which score wins, and what a resumed
run keeps of the scores."""

from pathlib import Path

import pytest

from negrl_operator.api.stage_config import PromptSpec, SelectionConfig
from negrl_trainer.selection import Score, Selector, best, read_scores, scored_steps, write_scores


@pytest.mark.parametrize(("steps_per_epoch", "total", "every", "expected"), [
    (10, 30, 0.5, [5, 10, 15, 20, 25, 30]),       # every half epoch
    (10, 32, 1.0, [10, 20, 30, 32]),              # and always after the last step
    (3, 9, 0.5, [2, 4, 6, 8, 9]),                 # half of 3 steps rounds to 2
    (1, 3, 0.25, [1, 2, 3]),                      # never less than one step apart
    (250, 2000, 8.0, [2000]),                     # a period past the end: the last step only
])
def test_scored_steps(steps_per_epoch, total, every, expected):
    assert scored_steps(steps_per_epoch, total, every) == expected
    selection = SelectionConfig(questions="unused.jsonl", task="gsm8k", every_epochs=every)
    selector = Selector(selection, PromptSpec(), Path("unused"), steps_per_epoch, total, [], [])
    assert [step for step in range(1, total + 1) if selector.due(step)] == expected  # the per-step check agrees


def test_the_best_score_wins_and_the_earliest_of_equals():
    scores = [Score(10, 0.5, 0.2), Score(20, 1.0, 0.4), Score(30, 1.5, 0.4), Score(40, 2.0, 0.3)]
    assert best(scores) == Score(20, 1.0, 0.4)
    assert best([]) is None


def test_a_resumed_run_keeps_only_the_scores_up_to_its_checkpoint(tmp_path):
    write_scores(tmp_path, [Score(10, 0.5, 0.2), Score(20, 1.0, 0.4), Score(30, 1.5, 0.1)])
    assert read_scores(tmp_path, 20) == [Score(10, 0.5, 0.2), Score(20, 1.0, 0.4)]
    assert read_scores(tmp_path / "nothing-yet", 20) == []
