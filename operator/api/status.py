"""NegRLExperiment status: what the operator observed and recorded (outputs only; see experiment.py
for the spec). Timestamps are RFC 3339 strings, as Kubernetes writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from negrl_operator.api.stage_config import Strict

# Invalid: the operator cannot read the spec (an API server that admitted it without this version's rules)
Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed", "Degraded", "Invalid"]
TERMINAL_PHASES = ("Succeeded", "Failed", "Degraded")  # Degraded: failurePolicy Continue, some branches done
StageState = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed"]
ConditionType = Literal["Ready", "Reconciling", "Stalled", "Progressing", "Degraded", "StorageShared"]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def camel(key: str) -> str:
    """A stage summary's snake_case key in the status's style: generated_tokens -> generatedTokens,
    pass_at_1 -> passAt1; a camelCase key stays as it is."""
    first, *rest = key.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_keys(summary: dict[str, Any]) -> dict[str, Any]:
    return {camel(str(key)): value for key, value in summary.items()}


class Condition(Strict):
    type: ConditionType = Field(description="Ready, Reconciling, Stalled (kstatus), Progressing, Degraded or StorageShared "
                                                     "(whether the pods that run at once can all mount spec.storage.claimName).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason of the last transition.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="metadata.generation the condition was computed from.")


class StageStatus(Strict):
    name: str = Field(description="Stage (graph node) name, e.g. sft, sample, credit, step-dpo, eval-sft.")
    kind: str = Field(description="prepare, train, sample, credit, pairs or evaluate.")
    state: StageState = Field("Pending", description="Pending, Waiting (for a sampler), Running, Succeeded, Failed.")
    start_time: str | None = Field(None, description="When its Job was first created (RFC 3339).")
    finish_time: str | None = Field(None, description="When its Job finished (RFC 3339).")
    artifact: str | None = Field(None, description="The stage's artifact folder on the storage volume.")
    job: str | None = Field(None, description="Name of the stage's Job.")
    message: str = Field("", description="Why it waits, or the failed Job's termination message.")
    reason: str = Field("", description="Machine-readable cause of the message: SamplerNotReady, ImagePullBackOff, "
                                        "Unschedulable, FailedCreate, CrashLoopBackOff, OOMKilled, Evicted, PodFailed.")
    since: str | None = Field(None, description="When the current reason was first observed (RFC 3339).")
    summary: dict[str, Any] = Field(default_factory=dict, description="The Job's summary (termination message), "
                                    "its keys in camelCase.")
    restarts: int = Field(0, description="Times the operator restarted this multi-node training stage's whole "
                                         "group after a lost rank (trainer.launcher Job; at most trainer.maxRestarts).")

    @field_validator("summary")
    @classmethod
    def _camel_case_keys(cls, summary: dict[str, Any]) -> dict[str, Any]:
        return camel_keys(summary)  # a status an older version wrote has the stages' own snake_case keys


class PolicyResult(Strict):
    policy: str = Field(description="Policy name (sft, rft, step-dpo, outcome-dpo, sft-x2, ...).")
    accuracy: float | None = Field(None, description="Greedy pass@1 on the test questions.")
    accuracy_ci_low: float | None = Field(None, description="Lower end of pass@1's 95% interval.")
    accuracy_ci_high: float | None = Field(None, description="Upper end of pass@1's 95% interval.")
    pass_k: float | None = Field(None, description="Sampled pass@k.")
    k: int | None = Field(None, description="k of pass@k.")
    questions: int | None = Field(None, description="Test questions evaluated.")


class ResultCounts(Strict):
    questions: int | None = Field(None, description="Training questions sampled.")
    samples: int | None = Field(None, description="Samples drawn.")
    positives: int | None = Field(None, description="Correct samples.")
    negatives: int | None = Field(None, description="Wrong samples.")
    unparseable: int | None = Field(None, description="Samples whose answer could not be parsed.")
    rft_examples: int | None = Field(None, description="Self-generated positives kept for RFT.")
    step_pairs: int | None = Field(None, description="Per-step DPO pairs.")
    outcome_pairs: int | None = Field(None, description="Outcome DPO pairs.")
    pits: int | None = Field(None, description="Negatives with a first pit.")
    rollouts: int | None = Field(None, description="Monte-Carlo rollouts generated.")
    generated_tokens: int | None = Field(None, description="Tokens generated by credit assignment.")


class SynthesisResult(Strict):
    """The synthesize stage's figures (spec.teacher), summed over its shards."""

    requests: int | None = Field(None, description="Requests sent to the teacher (retries included).")
    generated_tokens: int | None = Field(None, description="Tokens the teacher generated.")
    tokens_per_s: float | None = Field(None, description="Generated tokens per second (all shards together).")
    acceptance_rate: float | None = Field(
        None, description="Teacher solutions graded correct (or agreeing with the majority) / solutions generated."
    )
    duplicates: int | None = Field(
        None, description="Dropped as duplicates: accepted solutions repeating one kept for the same question, "
        "plus new problems repeating an earlier one (problems mode).",
    )
    contaminated: int | None = Field(
        None, description="New problems dropped for overlapping a test or validation question (problems mode)."
    )
    cost_tokens: int | None = Field(None, description="Tokens paid for: prompt plus generated.")
    examples: int | None = Field(None, description="D_syn records written (question, solution pairs).")


class ExperimentResults(Strict):
    policies: list[PolicyResult] = Field(default_factory=list, description="Evaluation of each policy.")
    counts: ResultCounts = Field(default_factory=ResultCounts, description="Totals over seeds.")
    synthesis: SynthesisResult | None = Field(
        None, description="What the teacher wrote (the synthesize stage, once it has succeeded; unset without "
        "spec.teacher).",
    )
    best_policy: str | None = Field(None, description="Policy with the highest pass@1.")
    best_accuracy: float | None = Field(None, description="Highest pass@1 among the evaluated policies.")


class ExperimentStatus(Strict):
    observed_generation: int = Field(0, description="metadata.generation last reconciled.")
    phase: Phase = Field(
        "Pending", description="Pending, Running, Suspended, Succeeded, Failed, Degraded (failurePolicy Continue: "
        "finished with some stages failed and some policies evaluated), or Invalid (the operator cannot read the "
        "spec; the message names the field).",
    )
    stage: str = Field("", description="Stages running now, comma-separated.")
    message: str = Field("", description="What the experiment waits for, or why it failed.")
    start_time: str | None = Field(None, description="When the first stage started (RFC 3339).")
    finish_time: str | None = Field(None, description="When it reached Succeeded, Failed or Degraded (RFC 3339).")
    retry: int = Field(0, description="The spec.retry value last acted on (failed stages were reset for it).")
    stages: list[StageStatus] = Field(default_factory=list, description="Every stage of the graph, in order.")
    results: ExperimentResults = Field(default_factory=ExperimentResults, description="Accuracies and counts.")
    conditions: list[Condition] = Field(default_factory=list,
                                        description="Ready, Reconciling, Stalled, Progressing and Degraded.")

    def stage_named(self, name: str) -> StageStatus | None:
        return next((stage for stage in self.stages if stage.name == name), None)

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)


def parse_status(raw: dict | None) -> ExperimentStatus:
    """A status as any version of the operator wrote it: fields this version does not know are dropped
    and a field it cannot read is reset (the next reconcile recomputes it from the children), so an
    upgrade never turns a running experiment into an invalid one."""
    try:
        return ExperimentStatus.model_validate(dict(raw or {}))
    except ValueError:
        pass
    known = _known(ExperimentStatus, dict(raw or {}))
    stages = [_lenient(StageStatus, _known(StageStatus, s)) for s in known.pop("stages", []) if isinstance(s, dict)]
    conditions = [_lenient(Condition, _known(Condition, c)) for c in known.pop("conditions", []) if isinstance(c, dict)]
    status = _lenient(ExperimentStatus, known) or ExperimentStatus()
    return status.model_copy(update={"stages": [s for s in stages if s is not None],
                                     "conditions": [c for c in conditions if c is not None]})


def _known(model: type[Strict], raw: dict) -> dict:
    names = {info.alias or name for name, info in model.model_fields.items()} | set(model.model_fields)
    return {key: value for key, value in raw.items() if key in names}


def _lenient(model: type[Strict], raw: dict):
    """The model from `raw`, leaving out the fields whose value does not validate (None if a required one fails)."""
    try:
        return model.model_validate(raw)
    except ValueError as error:
        bad = {str(e["loc"][0]) for e in error.errors() if e.get("loc")}  # type: ignore[attr-defined]
        try:
            return model.model_validate({k: v for k, v in raw.items() if k not in bad})
        except ValueError:
            return None
