"""Checkpoint selection on the validation split: which steps are scored, the greedy validation
accuracy of the model being trained, and the record of scores that survives a resume.

The paper keeps, for every |D_syn| point, the checkpoint with the best validation accuracy and
evaluates that one on test. A training stage with a selection scores its model every `everyEpochs`
(and after the last step), writes <output_dir>/model only when the score beats every earlier one,
and saves a resumable checkpoint at each scored step, so a resumed run never scores a step twice.
Scores go to <output_dir>/selection.jsonl ({step, epoch, accuracy}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from negrl_operator.api.artifact import read_jsonl
from negrl_operator.api.stage_config import PromptSpec, SelectionConfig

SELECTION_LOG = "selection.jsonl"


def scoring_period(steps_per_epoch: int, every_epochs: float) -> int:
    """Optimizer steps between two scores: `every_epochs` epochs, at least one step."""
    return max(1, round(every_epochs * steps_per_epoch))


def scored_steps(steps_per_epoch: int, total_steps: int, every_epochs: float) -> list[int]:
    """1-based optimizer steps after which the model is scored: every period, and always the last step."""
    period = scoring_period(steps_per_epoch, every_epochs)
    return sorted({*range(period, total_steps + 1, period), total_steps})


@dataclass(frozen=True)
class Score:
    step: int
    epoch: float
    accuracy: float


def best(scores: list[Score]) -> Score | None:
    """The highest accuracy, the earliest step among equals (less training for the same score)."""
    return max(scores, key=lambda score: (score.accuracy, -score.step), default=None)


def read_scores(output_dir: Path, until_step: int) -> list[Score]:
    """Scores of steps up to `until_step` (a resumed run redoes the ones after its checkpoint)."""
    path = output_dir / SELECTION_LOG
    if not path.exists():
        return []
    return [Score(**row) for row in read_jsonl(path) if row["step"] <= until_step]


def write_scores(output_dir: Path, scores: list[Score]) -> None:
    lines = "".join(json.dumps(score.__dict__) + "\n" for score in scores)
    (output_dir / SELECTION_LOG).write_text(lines)


def validation_questions(selection: SelectionConfig) -> list[dict]:
    questions = list(read_jsonl(selection.questions))[: selection.max_questions]
    if not questions:
        raise ValueError(f"selection: the validation file {selection.questions} has no question")
    return questions


def greedy_accuracy(model, tokenizer, questions: list[dict], prompt: PromptSpec, selection: SelectionConfig) -> float:
    """Share of `questions` whose greedy answer the project's grader marks correct."""
    import torch

    from negrl_sampler.grading.grader import grade_many
    from negrl_trainer.data import render_question

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    responses = []
    try:
        for start in range(0, len(questions), selection.batch_size):
            batch = questions[start:start + selection.batch_size]
            prompts = [render_question(tokenizer, prompt, q["question"]) for q in batch]
            encoded = tokenizer([p.text for p in prompts], add_special_tokens=prompts[0].special, padding=True,
                                return_tensors="pt").to(model.device)
            with torch.no_grad():
                output = model.generate(**encoded, do_sample=False, max_new_tokens=selection.max_tokens,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            responses += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    grades = grade_many((response, q["answer"], selection.task) for response, q in zip(responses, questions,
                                                                                         strict=True))
    return sum(grade.correct is True for grade in grades) / len(questions)


@dataclass
class Selector:
    """A training stage's selection state on rank 0: the questions, the scores so far (reloaded up to
    the resumed step) and the steps it scores."""

    config: SelectionConfig
    prompt: PromptSpec
    output_dir: Path
    steps_per_epoch: int
    total_steps: int
    questions: list[dict]
    scores: list[Score]

    @classmethod
    def start(cls, config: SelectionConfig, prompt: PromptSpec, output_dir: Path, steps_per_epoch: int,
              total_steps: int, resumed_step: int) -> Selector:
        return cls(config, prompt, output_dir, steps_per_epoch, total_steps, validation_questions(config),
                   read_scores(output_dir, resumed_step) if resumed_step else [])

    def due(self, step: int) -> bool:
        """Whether `step` is one of `scored_steps` (without listing them: called after every step)."""
        return step == self.total_steps or step % scoring_period(self.steps_per_epoch, self.config.every_epochs) == 0

    def score(self, model, tokenizer, step: int) -> bool:
        """Score `model` after `step` and record it; True when it beats every earlier score."""
        accuracy = greedy_accuracy(model, tokenizer, self.questions, self.prompt, self.config)
        previous = best(self.scores)
        self.scores.append(Score(step, round(step / max(1, self.steps_per_epoch), 4), accuracy))
        write_scores(self.output_dir, self.scores)
        return previous is None or accuracy > previous.accuracy

    def summary(self) -> dict:
        chosen = best(self.scores)
        if chosen is None:
            return {}
        return {"selected_step": chosen.step, "selected_epoch": chosen.epoch, "validation_accuracy": chosen.accuracy,
                "validation_curve": [[score.step, score.epoch, score.accuracy] for score in self.scores]}
