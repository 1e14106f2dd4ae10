"""Monte-Carlo per-step credit and the first-pit search (pure: no HTTP, no disk).

A negative y = y_1..y_L has prefix values Q_i = P(a completion from pi after y_1..y_i is correct).
Q_0 (the bare question) comes from the sample stage's samples of the question (with `soft` and `mean`
it is measured by K rollouts like every other prefix, see below); Q_L = 0 is known
(y itself is wrong), so no rollout is ever spent on the full response. Q_i for 0 < i < L is
estimated from K rollouts of the prefix:

    best_of_k:  Q_i = 1 if any rollout is correct, else 0
    soft:       Q_i = 1 - (1 - q_i)^K, q_i = the fraction of rollouts that were correct
    mean:       Q_i = q_i, the Monte-Carlo mean itself

The **first pit** c is the step of least advantage A_i = Q_i - Q_{i-1} (the first such step on a
tie), over i = 1..L with Q_L = 0. With best_of_k the values are 0 or 1 and Q_0 = 1, so that is the
first step with no successful rollout (c = L when every scanned prefix recovers: the mistake is the
stop). With `soft` or `mean` a later, deeper drop can beat the first zero, so every prefix is measured
with all K rollouts whatever the strategy, and c = argmin A. `mean` keeps the size of each drop: a
prefix past the mistake that the policy still solves now and then (q = 0.1) scores 0.1, not the 0.57
`soft` gives it at K=8, so the drop onto it stays the deepest. There Q_0 is rolled out too: the
samples may come from another temperature than the rollouts (`stages.credit.params.temperature`), and
an advantage compares two values of one policy; the samples' Q_0 still says which questions to skip,
and a Q_0 the rollouts measure as 0 ends the search with no pit. When Q_0 = 0 the policy cannot solve the
question at all, no step *drops* the value, and the negative has no pit (dropped, no rollouts spent).

Strategies (`rollout(step, offset, count)` draws completions `offset..offset+count-1` of the
K that belong to prefix `step`; seeds make completion j of a prefix the same text whichever
request asks for it, so the strategies see the same outcomes):

- `full`: every prefix 1..L-1, K rollouts each, all at once. The reference.
- `early_stop`: prefixes left to right, stop at the first pit. With best_of_k a prefix's rollouts
  go out one at a time and stop at the first success (the value is already 1); the prefix stays in
  vLLM's prefix cache between them. Finds exactly the pit of `full` given the same outcomes, and
  with the fewest rollouts any strategy that does can spend: every prefix before the pit needs one
  success, the pit needs K failures. (`rounds="doubling"` sends 1, 2, 4, ... at a time: fewer
  round trips, about 8% more tokens in bench/credit.py.)
- `bisect`: binary search between a prefix known to recover (lo, starting at Q_0) and one known to
  fail (hi, starting at Q_L = 0). It returns a step c with Q_{c-1} > 0 = Q_c, which is the *first*
  such step only when the values are monotone: once a prefix scores 0, every longer prefix scores
  0 too. A noisy early 0 (a recoverable prefix whose K rollouts all failed) or a recovery after a
  0 breaks that and bisect can report a later or earlier pit than `full`; `full` and `early_stop`
  are exact under the same outcomes. Rollouts one at a time as in early_stop.

With `soft` and `mean` every prefix gets all K rollouts (the estimate needs them all, and the least
advantage needs every prefix): the strategies only differ for best_of_k.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from negrl_sampler.record import StepValue

STRATEGIES = ("full", "early_stop", "bisect")
ESTIMATES = ("best_of_k", "soft", "mean")


@dataclass(frozen=True)
class RolloutBatch:
    """Completions of one prefix: `correct[j]` and `finished[j]` (ended on its own, not cut by
    max_tokens) for each completion, the completions' texts and the tokens they generated."""

    correct: list[bool]
    tokens: int
    texts: list[str] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)


Rollout = Callable[[int, int, int], Awaitable[RolloutBatch]]


@dataclass(frozen=True)
class PitSearch:
    values: list[StepValue]      # step 0 (from the samples) and every scanned prefix, by step
    pit: int | None
    rollouts: int                # completions requested
    tokens: int                  # tokens those completions generated
    recovery: str | None = None  # a correct, finished completion of the prefix before the pit


def step_value(successes: int, rollouts: int, k: int, estimate: str) -> float:
    if rollouts == 0 or successes == 0:
        return 0.0
    if estimate == "best_of_k":
        return 1.0
    q = successes / rollouts
    return q if estimate == "mean" else 1.0 - (1.0 - q) ** k


ROUNDS = ("single", "doubling")


def round_sizes(k: int, stop_at_success: bool, rounds: str = "single") -> list[int]:
    """How a prefix's K rollouts are split into requests when a success ends them: one at a time
    (`single`) or 1, 2, 4, ... (`doubling`); all K in one request otherwise."""
    if not stop_at_success:
        return [k]
    if rounds == "single":
        return [1] * k
    sizes, size, left = [], 1, k
    while left > 0:
        sizes.append(min(size, left))
        left -= sizes[-1]
        size *= 2
    return sizes


@dataclass
class _Scan:
    """The mutable tally of one negative's search."""

    k: int
    estimate: str
    rollout: Rollout
    rounds: str = "single"
    values: dict[int, StepValue] = field(default_factory=dict)
    recoveries: dict[int, str] = field(default_factory=dict)
    rollouts: int = 0
    tokens: int = 0

    async def measure(self, step: int, stop_at_success: bool | None = None) -> StepValue:
        """Roll out prefix `step`; by default rounds stop at the first success with best_of_k."""
        if stop_at_success is None:
            stop_at_success = self.estimate == "best_of_k"
        successes = offset = 0
        for size in round_sizes(self.k, stop_at_success, self.rounds):
            batch = await self.rollout(step, offset, size)
            offset += size
            self.rollouts += size
            self.tokens += batch.tokens
            successes += sum(batch.correct)
            self._keep_recovery(step, batch)
            if successes and stop_at_success:
                break
        value = StepValue(
            step=step, value=step_value(successes, offset, self.k, self.estimate),
            successes=successes, rollouts=offset,
        )
        self.values[step] = value
        return value

    def _keep_recovery(self, step: int, batch: RolloutBatch) -> None:
        if step in self.recoveries:
            return
        finished = batch.finished or [True] * len(batch.correct)
        for correct, done, text in zip(batch.correct, finished, batch.texts, strict=False):
            if correct and done:
                self.recoveries[step] = text
                return


async def _full(scan: _Scan, num_steps: int) -> int:
    steps = range(1, num_steps)
    measured = await asyncio.gather(*(scan.measure(step, stop_at_success=False) for step in steps))
    return next((v.step for v in measured if v.successes == 0), num_steps)


async def _early_stop(scan: _Scan, num_steps: int) -> int:
    for step in range(1, num_steps):
        if (await scan.measure(step)).successes == 0:
            return step
    return num_steps


async def _bisect(scan: _Scan, num_steps: int) -> int:
    low, high = 0, num_steps  # Q_low > 0, Q_high = 0
    while high - low > 1:
        middle = (low + high) // 2
        if (await scan.measure(middle)).successes == 0:
            high = middle
        else:
            low = middle
    return high


async def _least_advantage(scan: _Scan, num_steps: int) -> int | None:
    """Q_0 and every prefix with all K rollouts, then the step of least advantage (soft and mean
    estimates); None when Q_0 measures 0 (no step can drop the value)."""
    if (await scan.measure(0, stop_at_success=False)).successes == 0:
        return None
    await _full(scan, num_steps)
    return least_advantage_step([*(scan.values[step].value for step in range(num_steps)), 0.0])


def least_advantage_step(values: list[float]) -> int:
    """argmin over i = 1..L of values[i] - values[i-1] (the first on a tie); values[0] is Q_0 and
    values[L] is Q_L. The paper's first pit."""
    advantages = [after - before for before, after in zip(values, values[1:], strict=False)]
    return 1 + min(range(len(advantages)), key=lambda index: (advantages[index], index))


_SEARCH = {"full": _full, "early_stop": _early_stop, "bisect": _bisect}


async def search_pit(
    strategy: str, num_steps: int, rollout: Rollout, *, k: int = 5, estimate: str = "best_of_k",
    question_value: StepValue | None = None, rounds: str = "single",
) -> PitSearch:
    """Find the first pit of a negative with `num_steps` steps. `question_value` is Q_0 (step 0),
    measured by the sample stage; None means "assume the question is solvable"."""
    if strategy not in _SEARCH:
        raise ValueError(f"unknown pit-search strategy {strategy!r}; expected one of {STRATEGIES}")
    if rounds not in ROUNDS:
        raise ValueError(f"unknown rollout rounds {rounds!r}; expected one of {ROUNDS}")
    head = [question_value] if question_value is not None else []
    if num_steps == 0 or (question_value is not None and question_value.successes == 0):
        return PitSearch(values=head, pit=None, rollouts=0, tokens=0)
    scan = _Scan(k=k, estimate=estimate, rollout=rollout, rounds=rounds)
    if estimate not in ESTIMATES:
        raise ValueError(f"unknown value estimate {estimate!r}; expected one of {ESTIMATES}")
    if estimate == "best_of_k":
        pit = await _SEARCH[strategy](scan, num_steps)
    else:  # step 0 is among the measured values then
        head, pit = [], await _least_advantage(scan, num_steps)
    values = head + [scan.values[step] for step in sorted(scan.values)]
    return PitSearch(
        values=values, pit=pit, rollouts=scan.rollouts, tokens=scan.tokens,
        recovery=None if pit is None else scan.recoveries.get(pit - 1),
    )


def question_value(successes: int, samples: int, k: int, estimate: str) -> StepValue:
    """Q_0 of a question from its samples (step 0: the empty prefix)."""
    return StepValue(step=0, value=step_value(successes, samples, k, estimate), successes=successes,
                     rollouts=samples)
