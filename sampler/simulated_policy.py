"""A scripted policy for credit assignment: a negative whose per-step success probabilities are
known, answering the same `rollout(step, offset, count)` protocol as the real client.

Completion j of prefix i succeeds iff u(seed, i, j) < values[i-1] (prefix 0, the bare question:
u(seed, 0, j) < question), with u a fixed uniform draw:
like seeded vLLM requests, the same completion is the same outcome whichever request asks for it.
A rollout from prefix i generates the rest of the response's length, sum(step_tokens[i:]).
Used by the unit tests (with explicit outcome tables too) and by bench/credit.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from negrl_sampler.credit import RolloutBatch


def uniform(seed: int, step: int, index: int) -> float:
    return random.Random(f"{seed}:{step}:{index}").random()


@dataclass
class ScriptedNegative:
    """values[i-1] = P(a rollout after i steps succeeds), i = 1..L-1; step_tokens has L entries.
    `table[i-1][j]`, when given, fixes the outcome of completion j of prefix i instead. `question`:
    P(a rollout from the bare question succeeds), prefix 0."""

    values: list[float]
    step_tokens: list[int]
    seed: int = 0
    question: float = 1.0
    table: list[list[bool]] | None = None
    calls: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.step_tokens) != len(self.values) + 1:
            raise ValueError("need one token count per step: len(step_tokens) == len(values) + 1")

    @property
    def num_steps(self) -> int:
        return len(self.step_tokens)

    def outcome(self, step: int, index: int) -> bool:
        if step == 0:
            return uniform(self.seed, 0, index) < self.question
        if self.table is not None:
            return self.table[step - 1][index]
        return uniform(self.seed, step, index) < self.values[step - 1]

    def tokens_after(self, step: int) -> int:
        return sum(self.step_tokens[step:])

    def true_pit(self) -> int:
        """The first step whose true value is 0 (the response's last step when none is)."""
        return next((i + 1 for i, value in enumerate(self.values) if value <= 0.0), self.num_steps)

    async def rollout(self, step: int, offset: int, count: int) -> RolloutBatch:
        if not 0 <= step < self.num_steps:
            raise ValueError(f"prefix {step} is not a proper prefix of a {self.num_steps}-step response")
        self.calls.append((step, offset, count))
        correct = [self.outcome(step, offset + j) for j in range(count)]
        texts = [f"<rollout {step}.{offset + j}>" for j in range(count)]
        return RolloutBatch(correct=correct, tokens=count * self.tokens_after(step), texts=texts,
                            finished=[True] * count)
