"""The records the rollout stages write and the trainer reads (one JSON object per JSONL line)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Grade(BaseModel, frozen=True):
    """The verdict on one response: right, wrong or unparseable (`correct` None), and why."""

    correct: bool | None  # None == unparseable
    extracted: str | None
    reason: str


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(Record):
    """One line of a questions file. `answer` is the reference (bare, or a GSM8K solution ending in
    `#### N`); `solution` is the synthetic positive used for SFT and as a chosen response."""

    id: str
    question: str
    answer: str
    solution: str | None = None


class Sample(Record):
    question_id: str
    sample_index: int
    prompt: str
    response: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    grade: Grade


class StepValue(Record):
    """Value of the prefix made of the first `step` steps (1-based), from `rollouts` completions."""

    step: int
    value: float
    successes: int
    rollouts: int


class CreditRecord(Record):
    question_id: str
    sample_index: int
    prompt: str
    steps: list[str]            # "".join(steps) == the negative's response, exactly
    values: list[StepValue]     # only the prefixes the strategy scanned, by step
    pit: int | None             # 1-based index of the first critical step; None: no pit, dropped
    strategy: str
    rollouts: int               # completions requested
    generated_tokens: int
    recovery: str | None = None  # a correct completion after steps[:pit-1] (chosen source "rollout")
    finished: bool = True       # the negative ended on its own (not cut by max_tokens): Q_L = 0 is known


class Demonstration(Record):
    """A positive for SFT/RFT: train on `response` given `prompt`."""

    question_id: str
    prompt: str
    response: str
    source: Literal["self", "synthetic"]


class PreferencePair(Record):
    question_id: str
    kind: Literal["step", "outcome"]
    prompt: str
    chosen: str
    rejected: str               # per-step: the negative cut right after its pit
    rejected_eos: bool | None = None  # train `rejected` with an EOS; None: by kind (outcome yes, step no)
    chosen_source: Literal["self", "synthetic", "rollout"]
    rejected_sample_index: int
    pit: int | None = None
    values: list[float] = []


class EvalResult(Record):
    question_id: str
    greedy_correct: bool | None
    greedy_response: str
    sampled_correct: int
    samples: int
