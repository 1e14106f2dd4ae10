"""Answer extraction: each row is one named behaviour."""

import pytest

from negrl_sampler.grading.answer import extract, guess_task, reference_answer

GSM8K = {
    "hashes": ("She pays 3 + 4 = 7.\n#### 7", "7"),
    "hashes win over a later number": ("#### 12\nThat took 3 steps.", "12"),
    "hashes with commas": ("#### 1,234", "1234"),
    "answer is": ("So the answer is 42.", "42"),
    "final answer colon": ("Final answer: 15", "15"),
    "answer is with dollars and commas": ("The answer is $1,250.", "1250"),
    "answer is then a check": ("The answer is 18.\nCheck: 2 + 2 = 4.", "18"),
    "answer is in latex math": ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    "last number": ("He buys 3 apples, then 5 more, 8 in total.", "8"),
    "last number with units and period": ("So the total is 70,000 dollars.", "70000"),
    "latex dollars": ("Thus she earns \\$1,500 in total.", "1500"),
    "decimal": ("The answer is 3.50", "3.50"),
    "negative": ("The temperature is -5 degrees.", "-5"),
    "boxed number": ("so $\\boxed{18}$", "18"),
    "boxed latex kept whole": ("so $\\boxed{1{,}500}$", "1{,}500"),
    "fraction slash": ("Each gets 3/4 of a pie.", "3/4"),
    "no number": ("I do not know.", None),
    "NUL bytes dropped": ("\x00#### 4\x00", "4"),
    "unicode minus": ("The answer is \u22125.", "-5"),
}

MATH = {
    "boxed": ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    "fbox": ("\\fbox{7}", "7"),
    "nested braces": ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
    "last box wins": ("first \\boxed{1} then \\boxed{2}", "2"),
    "unclosed last box falls back to an earlier one": ("\\boxed{3} and \\boxed{4", "3"),
    "boxed with a space": ("\\boxed 5$", "5"),
    "final answer is": ("Final Answer: The final answer is $x^2$. I hope it is correct.", "x^2"),
    "final answer without math": ("The final answer is 12.", "12"),
    "the answer is": ("Thus the answer is $(1, 2)$.", "(1, 2)"),
    "hashes in math": ("#### \\frac{1}{3}", "\\frac{1}{3}"),
    "last number fallback": ("we get 10 and then 11", "11"),
    "no answer": ("hmm", None),
}

SEQUENCE = {
    "path label with arrows": ("Start.\nPath: 3 -> 17 -> 42", "3 17 42"),
    "last line": ("We go\n3 17 42 8", "3 17 42 8"),
    "commas and trailing period": ("Path: 1, 2, 3.", "1 2 3"),
    "brackets": ("Answer: [4, 5, 6]", "4 5 6"),
    "unicode arrow": ("Path: 1 \u2192 2", "1 2"),
    "words are not a sequence": ("I could not find a path!", None),
}

ARITHMETIC = {  # the generated task: `#### N` on its own line or no answer at all
    "answer line": ("Ann = 5 + 4 = 9\n#### 9", "9"),
    "no space after the hashes": ("#### 9", "9"),
    "runs of spaces count as one": ("  ####   9  ", "9"),
    "the last #### line decides": ("#### 9\nAnn = 9 + 1 = 10\n#### 10", "10"),
    "a broken last #### line is no answer": ("#### 9\n#### nine", None),
    "truncated: the last number is not an answer": ("Ann = 5 + 4 = 9", None),
    "answer is: no fallback": ("The answer is 9", None),
    "boxed: no fallback": ("\\boxed{9}", None),
    "hashes mid-line are not an answer line": ("Ann = 9 #### 9", None),
    "commas are not the task's format": ("#### 1,000", None),
    "thirty-one digits are no answer": ("#### " + "1" * 31, None),
}


@pytest.mark.parametrize("name", GSM8K)
def test_gsm8k_extraction(name):
    response, expected = GSM8K[name]
    assert extract(response, "gsm8k") == expected


@pytest.mark.parametrize("name", ARITHMETIC)
def test_arithmetic_extraction(name):
    response, expected = ARITHMETIC[name]
    assert extract(response, "arithmetic") == expected


@pytest.mark.parametrize("name", MATH)
def test_math_extraction(name):
    response, expected = MATH[name]
    assert extract(response, "math") == expected


@pytest.mark.parametrize("name", SEQUENCE)
def test_sequence_extraction(name):
    response, expected = SEQUENCE[name]
    assert extract(response, "sequence") == expected


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("Janet sells 16 - 3 = 13 eggs.\n#### 26", "26"),
        ("#### 1,000", "1,000"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        ("  42 ", "42"),
    ],
)
def test_reference_answer_takes_text_after_last_hashes(reference, expected):
    assert reference_answer(reference) == expected


@pytest.mark.parametrize(
    "reference, task",
    [
        ("Some solution\n#### 18", "gsm8k"),
        ("18", "gsm8k"),
        ("-3.5", "gsm8k"),
        ("3 17 42 8", "sequence"),
        ("3 -> 17", "sequence"),
        ("\\frac{1}{2}", "math"),
        ("1, 2", "math"),
        ("x^2", "math"),
    ],
)
def test_guess_task(reference, task):
    assert guess_task(reference) == task


def test_extraction_of_a_huge_response_is_linear():
    response = "word 1 " * 400_000 + "#### 9"
    assert extract(response, "gsm8k") == "9"
    assert extract("{" * 100_000 + "\\boxed{" * 1000, "math") is None
