"""Answer extraction from untrusted model responses.

Everything here is linear-time string work (no backtracking-prone patterns over the whole response)
and never touches sympy. Four task types:

- ``gsm8k``: ``#### N``, then ``\\boxed{N}``, then "The (final) answer is N", else the last number in
  the response. The result is a cleaned number string (commas, ``$`` and units dropped).
- ``math``: the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces), else "final answer
  is ...", else "the answer is ...", else ``#### ...``, else the last number.
- ``sequence``: the token list after the last "Path:"-style label, else on the last non-empty line;
  tokens are separated by whitespace, commas or arrows.
- ``arithmetic`` (the generated task, graded strictly): the last line that starts with ``####`` must
  read ``#### N``; there are no fallbacks, so an answer without that line is no answer (a truncated
  response whose last number happens to be the answer is not correct).

References may be bare answers or full GSM8K solutions ending in ``#### N``.
"""

from __future__ import annotations

import re
from typing import Literal

Task = Literal["gsm8k", "math", "sequence", "arithmetic"]
TASKS: tuple[str, ...] = ("gsm8k", "math", "sequence", "arithmetic")

MAX_BOXES_TRIED = 8  # unclosed boxes scanned from the end before giving up (bounds the work)
MAX_ANSWER_SPAN = 2_000  # characters taken after an "answer is" marker

_UNICODE = str.maketrans(
    {
        "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " ",
        "\u200b": "", "\ufeff": "", "\u00d7": "\\times ", "\u22c5": "\\cdot ", "\u00f7": "/",
        "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt ", "\u2192": "->", "\u2264": "\\le ",
        "\u2265": "\\ge ", "\u00bd": " 1/2", "\u00bc": " 1/4", "\u00be": " 3/4", "\u00b0": "^\\circ ",
    }
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_NUMBER = re.compile(r"-?\$?\s?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:\s?/\s?[0-9]+(?:\.[0-9]+)?)?")
_HASHES = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_FINAL_ANSWER_IS = re.compile(r"final\s+answer\s*(?:is|:)\s*:?", re.IGNORECASE)
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_PATH_LABEL = re.compile(r"(?:path|answer|sequence|route)\s*(?:is)?\s*[:=]", re.IGNORECASE)
_SEQ_SPLIT = re.compile(r"\s*(?:->|=>|\u2192|,|;|\s)\s*")
_SEQ_TOKEN = re.compile(r"[A-Za-z0-9_]+")
_ARITHMETIC_ANSWER = re.compile(r"####\s?([0-9]{1,30})")  # longer is no answer (bounds int())
_GSM_NUMBER_REF = re.compile(r"-?\$?\s?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?%?")


def clean_text(text: str) -> str:
    """Drops control characters (NUL included) and maps a few Unicode symbols to LaTeX/ASCII."""
    return _CONTROL.sub("", text).translate(_UNICODE)


def reference_answer(reference: str) -> str:
    """The bare answer of a reference: the text after the last ``####`` of a GSM8K solution."""
    cut = reference.rfind("####")
    text = reference[cut + 4:] if cut >= 0 else reference
    return clean_text(text).strip()


def guess_task(reference: str) -> Task:
    """``gsm8k`` for GSM8K solutions and plain numbers, ``sequence`` for space/arrow separated ids
    (two or more, no commas), else ``math``."""
    if "####" in reference:
        return "gsm8k"
    text = clean_text(reference).strip()
    if _GSM_NUMBER_REF.fullmatch(text):
        return "gsm8k"
    if "," not in text and "\\" not in text:
        tokens = [t for t in _SEQ_SPLIT.split(text) if t]
        if len(tokens) >= 2 and all(_SEQ_TOKEN.fullmatch(t) for t in tokens):
            return "sequence"
    return "math"


def clean_number(text: str) -> str:
    """``$1,234.50`` -> ``1234.50``; ``3 / 4`` -> ``3/4``."""
    return text.replace("$", "").replace(",", "").replace(" ", "")


def last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - keeps the last match
        pass
    return found


def last_number(text: str) -> str | None:
    found = last_match(_NUMBER, text)
    return clean_number(found.group(0)) if found else None


def first_number(text: str) -> str | None:
    found = _NUMBER.search(text)
    return clean_number(found.group(0)) if found else None


def boxed_content(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``/``\\fbox{...}`` (nested braces), or ``\\boxed 5``."""
    end = len(text)
    for _ in range(MAX_BOXES_TRIED):
        start = max(text.rfind("\\boxed", 0, end), text.rfind("\\fbox", 0, end))
        if start < 0:
            return None
        body = start + (6 if text.startswith("\\boxed", start) else 5)
        while body < len(text) and text[body] == " ":
            body += 1
        if body < len(text) and text[body] == "{":
            close = matching_brace(text, body)
            if close is not None:
                return text[body + 1:close].strip()
        elif body < len(text) and body > start + 5 and text[body - 1] == " ":
            token = re.match(r"[^\s$]+", text[body:body + MAX_ANSWER_SPAN])
            if token:
                return token.group(0)
        end = start
    return None


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the brace closing the one at ``open_at`` (escaped braces ignored), or None."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def after_marker(text: str, marker: re.Pattern[str]) -> str | None:
    """The rest of the line after the last match of ``marker`` (bounded), or None."""
    found = last_match(marker, text)
    if found is None:
        return None
    rest = text[found.end():found.end() + MAX_ANSWER_SPAN]
    line = rest.strip().split("\n", 1)[0].strip()
    return line or None


def math_of_line(line: str) -> str:
    """The first ``$...$``-style span of a line, else the line without a trailing sentence end."""
    boxed = boxed_content(line)
    if boxed is not None:
        return boxed
    span = _MATH_SPAN.search(line)
    if span:
        return next(g for g in span.groups() if g is not None).strip()
    line = re.split(r"\.\s|\s+I hope", line, maxsplit=1)[0]
    return line.rstrip(". ").strip()


def number_or_math(candidate: str, line: str) -> str | None:
    """A GSM8K-style answer: the cleaned number when ``candidate`` is a plain number, the LaTeX
    candidate when it has markup, else the first number of ``line``."""
    plain = _NUMBER.fullmatch(candidate.strip().rstrip("."))
    if plain:
        return clean_number(plain.group(0))
    if any(mark in candidate for mark in ("\\", "^", "{", "!")):
        return candidate
    return first_number(line)


def extract_gsm8k(response: str) -> str | None:
    text = clean_text(response)
    hashes = last_match(_HASHES, text)
    if hashes is not None:
        found = first_number(hashes.group(1))
        if found is not None:
            return found
    boxed = boxed_content(text)
    if boxed:
        return number_or_math(boxed, boxed)
    line = after_marker(text, _ANSWER_IS)
    if line is not None:
        found = number_or_math(math_of_line(line), line)
        if found is not None:
            return found
    return last_number(text)


def extract_math(response: str) -> str | None:
    text = clean_text(response)
    boxed = boxed_content(text)
    if boxed:
        return boxed
    for marker in (_FINAL_ANSWER_IS, _ANSWER_IS):
        line = after_marker(text, marker)
        if line:
            return math_of_line(line) or None
    line = after_marker(text, _HASHES_MARKER)
    if line:
        return line.strip() or None
    return last_number(text)


_HASHES_MARKER = re.compile(r"####")


def split_sequence(text: str) -> list[str] | None:
    """Tokens of a sequence line (brackets and a trailing period dropped); None if any token is not
    an identifier."""
    line = text.strip().strip("[]()").rstrip(".").strip().strip("[]()")
    tokens = [t for t in _SEQ_SPLIT.split(line) if t]
    if not tokens or not all(_SEQ_TOKEN.fullmatch(t) for t in tokens):
        return None
    return tokens


def extract_sequence(response: str) -> list[str] | None:
    text = clean_text(response)
    label = last_match(_PATH_LABEL, text)
    if label is not None:
        line = text[label.end():label.end() + MAX_ANSWER_SPAN].strip().split("\n", 1)[0]
        return split_sequence(line)
    lines = [ln for ln in text[-MAX_ANSWER_SPAN:].split("\n") if ln.strip()]
    return split_sequence(lines[-1]) if lines else None


def extract_arithmetic(response: str) -> str | None:
    """The digits of the last line that starts with ``####``, when that line reads ``#### N``."""
    answers = [line for line in (" ".join(line.split()) for line in clean_text(response).split("\n"))
               if line.startswith("####")]
    match = _ARITHMETIC_ANSWER.fullmatch(answers[-1]) if answers else None
    return match[1] if match else None


def extract(response: str, task: Task) -> str | None:
    """The answer a response gives, as text (a sequence is joined by single spaces)."""
    if task == "gsm8k":
        return extract_gsm8k(response)
    if task == "arithmetic":
        return extract_arithmetic(response)
    if task == "sequence":
        tokens = extract_sequence(response)
        return " ".join(tokens) if tokens is not None else None
    return extract_math(response)
