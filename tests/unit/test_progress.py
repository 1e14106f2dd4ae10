"""Progress lines for logs (no terminal): their text, their timing, and `negrl run`'s stage lines."""

from __future__ import annotations

import pytest

from negrl_operator.api.progress import Throttle, clock, eta_s, is_progress_line, period_s, progress_line
from negrl_operator.local.view import LogView, finished_line, headline, started_line

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (41.4, "41s"), (59.6, "1m00s"), (181, "3m01s"),
                                           (3599, "59m59s"), (7500, "2h05m"), (-3, "0s")])
def test_clock(seconds, text):
    assert clock(seconds) == text


@pytest.mark.parametrize("done, total, elapsed, start, eta", [
    (10, 40, 20.0, 0, 60.0),   # 2 s a unit, 30 units left
    (25, 40, 30.0, 10, 30.0),  # resumed at 10: 15 fresh units in 30 s, 15 left
    (10, 40, 20.0, 10, None),  # nothing done in this run yet
    (0, 40, 0.0, 0, None),
])
def test_eta_counts_only_this_runs_units(done, total, elapsed, start, eta):
    assert eta_s(done, total, elapsed, start) == eta


def test_progress_line_text():
    line = progress_line("sample", 120, 500, "questions", 57.0, figures="correct 41%")
    assert line == "progress: sample 120/500 questions (24%) 2.1/s elapsed 57s ETA 3m00s | correct 41%"
    assert is_progress_line(line) and not is_progress_line("sample 1/2")
    assert progress_line("sft", 0, 0, "steps", 0.0) == "progress: sft 0/0 steps (100%) 0/s elapsed 0s ETA ?"


def test_throttle_prints_the_first_the_periodic_and_the_last():
    throttle = Throttle(30.0)
    due = [throttle.due(t) for t in (0.0, 10.0, 29.9, 30.0, 45.0, 61.0)] + [throttle.due(62.0, finished=True)]
    assert due == [True, False, False, True, False, True, True]


@pytest.mark.parametrize("value, period", [("", 30.0), ("0", 0.0), ("2.5", 2.5), ("-1", 0.0), ("soon", 30.0)])
def test_period_from_the_environment(value, period):
    assert period_s({"NEGRL_PROGRESS_EVERY_S": value}) == period


def test_stage_lines():
    assert started_line(3.2, "sft", 2, 12) == "[     3s] start sft (stage 2/12)"
    assert finished_line(95, "sft", 92, "final_loss=0.120", 2, 12, 600) == \
        "[  1m35s] done  sft in 1m32s (final_loss=0.120); 2/12 stages done; run ETA 10m00s"
    assert finished_line(700, "eval-sft", 5, "", 12, 12, 0) == "[ 11m40s] done  eval-sft in 5s; 12/12 stages done"


class _Node:
    def __init__(self, name):
        self.name = name


def test_log_view_prints_stage_lines_in_order(capsys):
    import io

    out = io.StringIO()
    view = LogView("demo", "transformers", out=out)
    nodes = [_Node("prepare"), _Node("sft"), _Node("eval-sft")]
    view.begin(nodes, {"prepare"})
    for node, summary in ((nodes[1], {"final_loss": 0.5}), (nodes[2], {"pass_at_1": 0.25})):
        view.started(node)
        view.relay(node, "progress: sft 1/2 steps")
        view.finished(node, summary)
    lines = [line.split("] ", 1)[-1] for line in out.getvalue().splitlines()]
    assert lines[0] == "negrl run demo [transformers]: 3 stages, 1 already done"
    assert [line.split(" (")[0].split(" in ")[0] for line in lines[1:]] == [
        "start sft", "progress: sft 1/2 steps", "done  sft", "start eval-sft", "progress: sft 1/2 steps",
        "done  eval-sft"]
    assert lines[3].endswith("2/3 stages done; run ETA 0s") and lines[6].endswith("3/3 stages done")
    assert headline({"pass_at_1": 0.25}) in lines[6]
