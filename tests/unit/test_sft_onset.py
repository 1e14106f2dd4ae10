"""bench/sft_onset.py: the step at which the star-graph SFT loss leaves its plateau."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("sft_onset", Path(__file__).parents[2] / "bench" / "sft_onset.py")
sft_onset = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(sft_onset)


@pytest.mark.parametrize(("losses", "expected"), [
    # 150 plateau steps at 1.0, then 0.2: the trailing mean of 100 falls below 0.5 once 63 of them
    # are 0.2 (100 - 0.8 k < 50 needs k > 62.5), at step 150 + 63
    ([1.0] * 150 + [0.2] * 100, 213),
    ([1.0] * 300, None),  # never leaves the plateau
    ([0.1] * 99, None),  # shorter than one window
    ([0.1] * 100, 100),
    ([0.5] * 200, None),  # "below" the threshold, not at it
])
def test_onset_is_the_first_step_whose_trailing_mean_is_below_the_threshold(losses, expected):
    assert sft_onset.onset_step(losses) == expected
