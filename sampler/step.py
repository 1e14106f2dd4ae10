"""Step splitting: a response becomes the pieces whose values credit assignment estimates.

Invariant: `"".join(split_steps(response, spec)) == response`, exactly (whitespace included), so a
prefix of steps is a prefix of the response the policy produced and rollouts continue it verbatim.

`line` (GSM8K, MATH): a step is a line with its newline; blank lines stick to the step before them
(to the first step at the start). `space` (star graph): a step is one word with the spaces before
it, so a prefix never ends in a space (a tokenizer would read a trailing space as a token of its
own, and rollouts from it would start off-distribution); trailing spaces join the last step. Then pieces shorter than `min_chars` (not counting whitespace) are merged into the next step
(the last one into the step before it), and a tail beyond `max_steps` is merged into the last step.
"""

from __future__ import annotations

import re

from negrl_operator.api.stage_config import StepSplitSpec

_LINE = re.compile(r"[^\n]*\n|[^\n]+$")
_WORD = re.compile(r"\s*\S+|\s+$")


def _raw_pieces(response: str, delimiter: str) -> list[str]:
    """Pieces that each hold some non-whitespace; leading whitespace joins the first piece and
    whitespace-only pieces join the piece before them."""
    pattern = _LINE if delimiter == "line" else _WORD
    pieces: list[str] = []
    pending = ""  # whitespace seen before the first real piece
    for match in pattern.finditer(response):
        piece = match.group(0)
        if piece.strip():
            pieces.append(pending + piece)
            pending = ""
        elif pieces:
            pieces[-1] += piece
        else:
            pending += piece
    return pieces


def _merge_short(pieces: list[str], min_chars: int) -> list[str]:
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        piece = carry + piece
        if len(piece.strip()) < min_chars:
            carry = piece
        else:
            merged.append(piece)
            carry = ""
    if carry:
        if merged:
            merged[-1] += carry
        else:
            merged.append(carry)
    return merged


def split_steps(response: str, spec: StepSplitSpec | None = None) -> list[str]:
    """The steps of `response`; an empty response has none, a whitespace-only one is one step."""
    spec = spec or StepSplitSpec()
    if not response:
        return []
    pieces = _merge_short(_raw_pieces(response, spec.delimiter), spec.min_chars)
    if not pieces:
        return [response]
    if len(pieces) > spec.max_steps:
        pieces = pieces[: spec.max_steps - 1] + ["".join(pieces[spec.max_steps - 1 :])]
    return pieces


def step_prefix(steps: list[str], count: int) -> str:
    """The response text made of the first `count` steps."""
    return "".join(steps[:count])
