"""Generated multi-step arithmetic word problems whose answers can be checked line by line.

A problem: a few people each hold a count of one item; a chain of events changes one person's count
each (add a constant, give some away, double or triple, get as many as another person has); the
question asks for one person's final count. With a lexicon (`lexicon.py`) an add or give-away event
may be phrased with a made-up verb whose meaning is learnt from examples. With one person the chain
is a single running count (each line starts from the last result: no lookup of a count by name). The
reference solution is GSM8K-shaped: one line per event, `Ann = 5 + 4 = 9`, then `#### N`. This module owns generation, the
exact text format (every token separated by one space, so a word-level tokenizer can give each its
own id; `vocabulary` lists them), parsing a question back to its problem, the hash-based split of a
question, and the checker that re-runs a model's answer line by line against the problem's true
state (`check_response`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from negrl_sampler.lexicon import HALF, draw_verb, lexicon_words, verb_op

NAMES = ("Ann", "Bob", "Cid", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lea")
ITEMS = ("apples", "marbles", "coins", "stickers", "cards", "shells", "stamps", "beads", "pens", "books")
WORDS = ("has", "gets", "more", "gives", "away", "The", "of", "double", "triple", "as", "many", "How",
         "does", "have")
SYMBOLS = (".", "?", "=", "+", "-", "*", "####")
FACTOR_WORDS = {2: "double", 3: "triple"}
MIN_QUANTITIES, MAX_QUANTITIES, MAX_CHAIN_LENGTH, MAX_MAX_VALUE = 1, 6, 12, 10_000
# Per mille of a question's sha256: a question's text alone decides its split, whatever the seeds.
SPLIT_BUCKETS = {"validation": range(0, 50), "test": range(50, 100), "pretrain": range(100, 200),
                 "train": range(200, 1000)}
MAX_FRUITLESS_DRAWS = 20_000  # draws in a row with nothing new for the split: its space is used up
MAX_DIGITS = 12  # numbers in model output are bounded before int() sees them


@dataclass(frozen=True)
class Event:
    """target = target `op` operand, where the operand is `amount` (a constant; the factor for `*`)
    or, for add-another, `other`'s count at that moment (then op is `+` and amount is None). `verb`:
    the lexicon verb that phrases a constant `+` or `-` event (None: the core phrasing)."""

    target: str
    op: str
    amount: int | None = None
    other: str | None = None
    verb: str | None = None


@dataclass(frozen=True)
class Problem:
    names: tuple[str, ...]
    item: str
    initial: tuple[int, ...]  # initial[i] is names[i]'s count
    events: tuple[Event, ...]
    asked: str


def validate_knobs(quantities: int, chain_length: int, max_value: int, interact: float, lexicon: int = 0) -> None:
    if not MIN_QUANTITIES <= quantities <= MAX_QUANTITIES:
        raise ValueError(f"quantities must be in {MIN_QUANTITIES}..{MAX_QUANTITIES}, got {quantities}")
    if not 1 <= chain_length <= MAX_CHAIN_LENGTH:
        raise ValueError(f"chain_length must be in 1..{MAX_CHAIN_LENGTH}, got {chain_length}")
    if not 1 <= max_value <= MAX_MAX_VALUE:
        raise ValueError(f"max_value must be in 1..{MAX_MAX_VALUE}, got {max_value}")
    if not 0.0 <= interact <= 1.0:
        raise ValueError(f"interact must be a probability in [0, 1], got {interact}")
    if not 0 <= lexicon <= HALF:
        raise ValueError(f"lexicon must be in 0..{HALF}, got {lexicon}")


def apply_op(op: str, value: int, operand: int) -> int:
    return value + operand if op == "+" else value - operand if op == "-" else value * operand


def _constant_amounts(op: str, value: int, max_value: int, symmetric: bool = False) -> range | list[int]:
    """The constants that keep `value op constant` in [0, max_value] (0 is never added or taken);
    `symmetric`: for `+` and `-` those that keep both `value + c` and `value - c` in range when there
    are any, so the range does not tell which of the two an event is (a verb must)."""
    if op in "+-" and symmetric and 0 < value < max_value:
        return range(1, min(value, max_value - value) + 1)
    if op == "+":
        return range(1, max_value - value + 1)
    if op == "-":
        return range(1, value + 1)
    return [factor for factor in FACTOR_WORDS if value * factor <= max_value]


def _draw_event(rng: random.Random, counts: dict[str, int], max_value: int, interact: float,
                lexicon: int, own_verbs: bool) -> Event:
    """Add-another with probability `interact` (uniform over the pairs that stay in range; when none
    does, a constant event instead), else a uniform op and target, redrawn until some constant fits;
    with a lexicon, constants that fit either operator (`_constant_amounts`) and then a phrasing of a
    `+` or `-` event (neither without one, so a lexicon of 0 gives the same problems as before
    lexicons existed)."""
    if rng.random() < interact:
        pairs = [(t, o) for t in counts for o in counts if t != o and counts[t] + counts[o] <= max_value]
        if pairs:
            target, other = rng.choice(pairs)
            return Event(target, "+", other=other)
    names = list(counts)
    while True:  # ends: someone can always gain 1 (count < max_value) or give 1 away (count >= 1)
        op, target = rng.choice("+-*"), rng.choice(names)
        amounts = _constant_amounts(op, counts[target], max_value, symmetric=lexicon > 0)
        if amounts:
            amount = rng.choice(amounts)
            verb = draw_verb(rng, op, lexicon, own_verbs) if lexicon and op != "*" else None
            return Event(target, op, amount=amount, verb=verb)


def generate_problem(rng: random.Random, quantities: int, chain_length: int, max_value: int,
                     interact: float, lexicon: int = 0, own_verbs: bool = False) -> Problem:
    """Every initial count, constant and intermediate count lies in [0, max_value]. Initial counts are
    at most max_value // quantities, so everyone's total fits in range and add-another events mostly
    can be drawn (from the full range about 40% of them found no pair in range and became constants).
    The asked person is uniform over all people, independent of the chain (no shortcut is planted)."""
    validate_knobs(quantities, chain_length, max_value, interact, lexicon)
    names = tuple(rng.sample(NAMES, quantities))
    item = rng.choice(ITEMS)
    initial = tuple(rng.randint(0, max_value // quantities) for _ in names)
    counts = dict(zip(names, initial, strict=True))
    events = []
    for _ in range(chain_length):
        event = _draw_event(rng, counts, max_value, interact, lexicon, own_verbs)
        operand = counts[event.other] if event.other is not None else event.amount
        counts[event.target] = apply_op(event.op, counts[event.target], operand)
        events.append(event)
    return Problem(names, item, initial, tuple(events), rng.choice(names))


def event_steps(problem: Problem) -> tuple[list[tuple[int, int, int]], dict[str, int]]:
    """(target's count before, operand, result) for each event, and everyone's final count."""
    counts = dict(zip(problem.names, problem.initial, strict=True))
    steps = []
    for event in problem.events:
        before = counts[event.target]
        operand = counts[event.other] if event.other is not None else event.amount
        counts[event.target] = apply_op(event.op, before, operand)
        steps.append((before, operand, counts[event.target]))
    return steps, counts


def _event_sentence(event: Event, item: str) -> str:
    if event.other is not None:
        return f"{event.target} gets as many {item} as {event.other} has ."
    if event.verb is not None:
        return f"{event.target} {event.verb} {event.amount} {item} ."
    if event.op == "+":
        return f"{event.target} gets {event.amount} more {item} ."
    if event.op == "-":
        return f"{event.target} gives away {event.amount} {item} ."
    return f"The {item} of {event.target} {FACTOR_WORDS[event.amount]} ."


def render_question(problem: Problem) -> str:
    sentences = [f"{name} has {value} {problem.item} ." for name, value in zip(problem.names, problem.initial,
                                                                                 strict=True)]
    sentences += [_event_sentence(event, problem.item) for event in problem.events]
    sentences.append(f"How many {problem.item} does {problem.asked} have ?")
    return " ".join(sentences)


def reference_lines(problem: Problem) -> list[str]:
    steps, counts = event_steps(problem)
    lines = [f"{event.target} = {before} {event.op} {operand} = {after}"
             for event, (before, operand, after) in zip(problem.events, steps, strict=True)]
    return [*lines, f"#### {counts[problem.asked]}"]


def vocabulary(max_value: int, lexicon: int = 0, own_lexicon: int = 0) -> list[str]:
    """Every token a question or reference solution can hold (lines are joined by "\\n", which is a
    separator, not a token)."""
    return [*NAMES, *ITEMS, *WORDS, *SYMBOLS, *(str(number) for number in range(max_value + 1)),
            *lexicon_words(lexicon), *lexicon_words(own_lexicon, own=True)]


_NAME, _ITEM = "|".join(NAMES), "|".join(ITEMS)
_NUM = rf"0|[1-9][0-9]{{0,{MAX_DIGITS - 1}}}"
_SENTENCES = (
    ("initial", re.compile(rf"(?P<target>{_NAME}) has (?P<amount>{_NUM}) (?P<item>{_ITEM})")),
    ("+", re.compile(rf"(?P<target>{_NAME}) gets (?P<amount>{_NUM}) more (?P<item>{_ITEM})")),
    ("-", re.compile(rf"(?P<target>{_NAME}) gives away (?P<amount>{_NUM}) (?P<item>{_ITEM})")),
    ("*", re.compile(rf"The (?P<item>{_ITEM}) of (?P<target>{_NAME}) (?P<factor>double|triple)")),
    ("other", re.compile(rf"(?P<target>{_NAME}) gets as many (?P<item>{_ITEM}) as (?P<other>{_NAME}) has")),
    ("verb", re.compile(rf"(?P<target>{_NAME}) (?P<verb>[a-z]+) (?P<amount>{_NUM}) (?P<item>{_ITEM})")),
)
_ASK = re.compile(rf"How many (?P<item>{_ITEM}) does (?P<target>{_NAME}) have \?")
_FACTORS = {word: factor for factor, word in FACTOR_WORDS.items()}


def _parse_sentence(index: int, sentence: str) -> tuple[str, re.Match[str]]:
    for kind, pattern in _SENTENCES:
        match = pattern.fullmatch(sentence)
        if match is not None and (kind != "verb" or verb_op(match["verb"]) is not None):
            return kind, match
    raise ValueError(f"question sentence {index} {sentence!r} is no initial count or event of the arithmetic task")


def _event_of(kind: str, match: re.Match[str]) -> Event:
    if kind == "other":
        return Event(match["target"], "+", other=match["other"])
    if kind == "*":
        return Event(match["target"], "*", amount=_FACTORS[match["factor"]])
    if kind == "verb":
        return Event(match["target"], verb_op(match["verb"]), amount=int(match["amount"]), verb=match["verb"])
    return Event(match["target"], kind, amount=int(match["amount"]))


def parse_problem(question: str) -> Problem:
    """The inverse of `render_question`; a ValueError names the sentence or field that did not parse."""
    if not question or question != " ".join(question.split()):
        raise ValueError("question must be one line of tokens separated by single spaces")
    *statements, ask = question.split(" . ")
    names: list[str] = []
    initial: list[int] = []
    events: list[Event] = []
    items = set()
    for index, sentence in enumerate(statements, start=1):
        kind, match = _parse_sentence(index, sentence)
        items.add(match["item"])
        if kind != "initial":
            events.append(_event_of(kind, match))
        elif events or match["target"] in names:
            raise ValueError(f"question sentence {index} {sentence!r}: initial counts come first, one per person")
        else:
            names.append(match["target"])
            initial.append(int(match["amount"]))
    asked = _ASK.fullmatch(ask)
    if asked is None:
        raise ValueError(f"question must end 'How many <item> does <name> have ?', got {ask!r}")
    items.add(asked["item"])
    if len(items) != 1:
        raise ValueError(f"question mixes items {sorted(items)}; one item per problem")
    people = [event.target for event in events] + [e.other for e in events if e.other] + [asked["target"]]
    unknown = sorted(set(people) - set(names))
    if unknown:
        raise ValueError(f"question names people without an initial count: {unknown}")
    if any(event.other == event.target for event in events):
        raise ValueError("question adds a person's count to themself; add-another needs two people")
    return Problem(tuple(names), items.pop(), tuple(initial), tuple(events), asked["target"])


def split_of(question: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big") % 1000
    return next(split for split, buckets in SPLIT_BUCKETS.items() if bucket in buckets)


def arithmetic_questions(count: int, split: str, *, quantities: int, chain_length: int, max_value: int,
                         interact: float, seed: int, prefix: str, lexicon: int = 0,
                         own_verbs: bool = False) -> Iterator[dict[str, str]]:
    """`count` distinct records {id, question, answer, solution} of `split` (answer == solution, the full
    reference ending in `#### N`). Each split draws its own seeded stream and keeps only the questions
    whose hash falls in its bucket, so no question is in two splits whatever the seeds and knobs."""
    if split not in SPLIT_BUCKETS:
        raise ValueError(f"split must be one of {sorted(SPLIT_BUCKETS)}, got {split!r}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    validate_knobs(quantities, chain_length, max_value, interact, lexicon)
    rng = random.Random(f"negrl-arithmetic/{split}/{seed}")
    knobs = (quantities, chain_length, max_value, interact, lexicon, own_verbs)
    return _question_stream(rng, count, split, knobs, prefix)


def _question_stream(rng: random.Random, count: int, split: str, knobs: tuple, prefix: str):
    seen: set[str] = set()
    fruitless = 0
    while len(seen) < count:
        problem = generate_problem(rng, *knobs)
        question = render_question(problem)
        if question in seen or split_of(question) != split:
            fruitless += 1
            if fruitless > MAX_FRUITLESS_DRAWS:
                raise ValueError(f"only {len(seen)} distinct {split} questions found for knobs {knobs}; "
                                 f"ask fewer than {count} or widen quantities/chain_length/max_value")
            continue
        fruitless = 0
        seen.add(question)
        solution = "\n".join(reference_lines(problem))
        yield {"id": f"{prefix}-{len(seen) - 1}", "question": question, "answer": solution, "solution": solution}
