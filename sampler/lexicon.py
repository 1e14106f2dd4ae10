"""The arithmetic task's verb lexicon: made-up verbs that each mean "gets N more" or "gives away N".

A question of the arithmetic task can phrase an add or take-away event with a verb of the lexicon
(`Ann dakov 5 apples .`) instead of the core phrasing (`Ann gets 5 more apples .`). The verbs are
nonce words (consonant-vowel-consonant-vowel-consonant, drawn in a fixed seeded order), so their
meaning cannot be read off their spelling: a model learns each verb from the examples that use it.
Verb i means `+` when i is even and `-` when i is odd, so either operator has rare verbs.

A lexicon of size N holds the first N verbs; an `own` lexicon (a pretraining family's) the last N,
so with at most HALF verbs each, a pretraining family learns what verbs are for on verbs of its own
and none of the task's.

Phrasings are drawn by Zipf's law: the core phrasing of an operator has rank 1, the operator's
lexicon verbs ranks 2, 3, ... in lexicon order, and rank r is drawn with weight 1 / r. A few verbs
are frequent and most are rare, as words are in text: a small training set leaves many verbs unseen
or seen once, a larger one teaches more of them, so what the data is worth is how many verbs it
teaches, and a wrong verb reading is a discrete mistake in one line (the wrong operator), not a
near miss.
"""

from __future__ import annotations

import bisect
import itertools
import random
from functools import cache

MAX_LEXICON = 8192
HALF = MAX_LEXICON // 2  # the largest lexicon: task verbs and own verbs never meet
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_RESERVED = {"gives", "gets", "has", "more", "away", "double", "triple", "many", "does", "have"}


@cache
def nonce_verbs() -> tuple[str, ...]:
    """MAX_LEXICON made-up verbs in their fixed lexicon order (the same on every machine)."""
    words = ["".join(letters) for letters in itertools.product(_CONSONANTS, _VOWELS, _CONSONANTS, _VOWELS,
                                                                _CONSONANTS)]
    random.Random("negrl-lexicon").shuffle(words)
    return tuple(word for word in words if word not in _RESERVED)[:MAX_LEXICON]


def verb_op(verb: str) -> str | None:
    """The operator a lexicon verb means, or None for a word outside the lexicon."""
    index = _verb_index().get(verb)
    return None if index is None else "+" if index % 2 == 0 else "-"


@cache
def _verb_index() -> dict[str, int]:
    return {verb: index for index, verb in enumerate(nonce_verbs())}


def lexicon_words(size: int, own: bool = False) -> list[str]:
    """The verbs a lexicon of `size` holds, by rank (its questions draw only these); `own`: from the
    far end of the list."""
    verbs = nonce_verbs()
    return list(verbs[:size] if not own else verbs[::-1][:size])


@cache
def _phrasings(op: str, size: int, own: bool) -> tuple[tuple[str | None, ...], tuple[float, ...]]:
    """The operator's phrasings by rank (None: the core phrasing) and their cumulative Zipf weights."""
    verbs = (None, *(verb for verb in lexicon_words(size, own) if verb_op(verb) == op))
    return verbs, tuple(itertools.accumulate(1.0 / rank for rank in range(1, len(verbs) + 1)))


def draw_verb(rng: random.Random, op: str, size: int, own: bool = False) -> str | None:
    """A phrasing of `op` (`+` or `-`) from a lexicon of `size` verbs, by Zipf's law (None: core)."""
    verbs, cumulative = _phrasings(op, size, own)
    return verbs[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
