"""Step splitting: pieces concatenate back to the exact response."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from negrl_operator.api.stage_config import StepSplitSpec
from negrl_sampler.step import split_steps, step_prefix

LINES = StepSplitSpec(min_chars=8, max_steps=12)


@pytest.mark.parametrize(("response", "spec", "steps"), [
    ("", LINES, []),
    ("   \n", LINES, ["   \n"]),
    ("Natalia sold 24 clips.\nIn total 72 clips.\n#### 72",
     LINES, ["Natalia sold 24 clips.\n", "In total 72 clips.\n#### 72"]),  # "#### 72" is short: joins the last
    ("First line here\n\n\nSecond line here\n", LINES, ["First line here\n\n\n", "Second line here\n"]),
    ("\n\nLeading blanks go first\nthen more text\n", LINES,
     ["\n\nLeading blanks go first\n", "then more text\n"]),
    ("a\nb\nc\nlong enough line\n", LINES, ["a\nb\nc\nlong enough line\n"]),  # short pieces join the next
    ("one long line\nx", LINES, ["one long line\nx"]),
    ("12345678\n12345678\n12345678\n12345678\n", StepSplitSpec(min_chars=0, max_steps=2),
     ["12345678\n", "12345678\n12345678\n12345678\n"]),
    ("no newline at all", LINES, ["no newline at all"]),
    ("windows\r\nline endings\r\n", StepSplitSpec(min_chars=0), ["windows\r\n", "line endings\r\n"]),
    ("0 3 5 9", StepSplitSpec(delimiter="space", min_chars=0), ["0", " 3", " 5", " 9"]),
    (" 0 3 5", StepSplitSpec(delimiter="space", min_chars=0), [" 0", " 3", " 5"]),
    ("  0  3\n5 ", StepSplitSpec(delimiter="space", min_chars=0), ["  0", "  3", "\n5 "]),
    ("ab cd efgh", StepSplitSpec(delimiter="space", min_chars=3), ["ab cd", " efgh"]),
])
def test_split_table(response, spec, steps):
    assert split_steps(response, spec) == steps
    assert "".join(steps) == response


def test_prefix_is_a_prefix_of_the_response():
    response = "Step one is here.\nStep two is here.\nAnswer: #### 5\n"
    steps = split_steps(response, LINES)
    for count in range(len(steps) + 1):
        assert response.startswith(step_prefix(steps, count))
    assert step_prefix(steps, len(steps)) == response


text = st.text(alphabet=st.sampled_from(list("ab1 \n\t#.\r=")), max_size=300)
specs = st.builds(StepSplitSpec, min_chars=st.integers(0, 12), max_steps=st.integers(1, 20),
                  delimiter=st.sampled_from(["line", "space"]))


@settings(max_examples=400, deadline=None)
@given(response=text, spec=specs)
def test_pieces_concatenate_exactly_and_respect_the_cap(response, spec):
    steps = split_steps(response, spec)
    assert "".join(steps) == response
    assert len(steps) <= spec.max_steps
    assert all(steps)
    if response.strip():
        assert all(step.strip() for step in steps)
