"""The NegRLExperiment API (negrl.io/v1alpha1): one pydantic tree, from which the CRD is generated.

Hyperparameter blocks come unchanged from `stage_config` (their defaults live there only). Rules that
span several fields are `CrossFieldRule`s: each is checked here in Python and emitted as a CEL rule
(`x-kubernetes-validations`) in the CRD, so the API server rejects what `negrl run` would reject.

Spec changes to a running experiment: each stage reads the spec when it starts. A change reaches
the stages that have not started yet and the sampler Deployments (updated in place); running and
finished stages are never redone. A finished experiment (Succeeded or Failed) ignores spec changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from negrl_operator.api.pretrain import PretrainSpec, ScratchSpec
from negrl_operator.api.resource import ResourceSpec
from negrl_operator.api.secret_ref import SecretKeyRef
from negrl_operator.api.stage_config import (
    SEED_MAX,
    CreditParams,
    DataSourceSpec,
    EvalParams,
    PairParams,
    PromptSpec,
    SamplingParams,
    SelectionParams,
    Strict,
    Task,
    TrackingParams,
    TrainParams,
)
from negrl_operator.api.teacher import (
    KEY_ENV_TAKEN,
    ONE_TEACHER_MODEL,
    STAGE_POD_ENV,
    SynthesisParams,
    TeacherEndpointSpec,
    TeacherScratchSpec,
    TeacherServedSpec,
    TeacherSpec,
)
from negrl_operator.api.value_rule import DNS_SUBDOMAIN, IMAGE, QUANTITY_STRING

GROUP, VERSION, KIND, PLURAL = "negrl.io", "v1alpha1", "NegRLExperiment", "negrlexperiments"
API_VERSION = f"{GROUP}/{VERSION}"
ObjectName = Annotated[str, Field(min_length=1, max_length=253), DNS_SUBDOMAIN]  # a PVC, Secret, PriorityClass
Image = Annotated[str, Field(min_length=1, max_length=1024), IMAGE]
ShmSize = Annotated[str, Field(min_length=1), QUANTITY_STRING]


@dataclass(frozen=True)
class CrossFieldRule:
    """`cel` is evaluated by the API server on the object at `field_path`'s parent; `check` (None: the
    model enforces it itself) is the same rule in Python."""

    cel: str
    message: str
    field_path: str
    check: Callable[[BaseModel], bool] | None = None


class Checked(Strict):
    """A spec object with cross-field rules: `rules` are checked on validation and emitted as CEL."""

    rules: ClassVar[tuple[CrossFieldRule, ...]] = ()

    @model_validator(mode="after")
    def _cross_field_rules(self):
        for rule in self.rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(f"{rule.field_path.lstrip('.')}: {rule.message}")
        return self


# Rules for models defined in stage_config (they validate themselves; the CRD needs the CEL form).
EXTERNAL_RULES: dict[type[BaseModel], tuple[CrossFieldRule, ...]] = {
    DataSourceSpec: (
        CrossFieldRule(
            "self.kind in ['stargraph', 'arithmetic'] || (has(self.trainPath) && has(self.testPath))",
            "source kinds gsm8k-jsonl and questions-jsonl need trainPath and testPath", ".trainPath",
        ),
    ),
}


# Descriptions for stage_config fields that have none there (the CRD documents every field).
PARAM_DOCS: dict[tuple[type[BaseModel], str], str] = {
    (TrainParams, "learning_rate"): "Peak learning rate.",
    (TrainParams, "epochs"): "Passes over the training data (fractions allowed).",
    (TrainParams, "gradient_accumulation"): "Micro-steps per optimizer step.",
    (TrainParams, "warmup_ratio"): "Fraction of the steps spent warming the learning rate up.",
    (TrainParams, "schedule"): "Learning-rate schedule after warm-up: cosine, linear or constant.",
    (TrainParams, "weight_decay"): "AdamW weight decay.",
    (TrainParams, "max_grad_norm"): "Gradient clipping norm.",
    (TrainParams, "gradient_checkpointing"): "Recompute activations to save memory.",
    (TrainParams, "seed"): "Training seed (data order, dropout).",
    (SamplingParams, "temperature"): "Sampling temperature.",
    (SamplingParams, "top_p"): "Nucleus sampling mass.",
    (CreditParams, "temperature"): "Temperature of the rollouts.",
    (CreditParams, "top_p"): "Nucleus sampling mass of the rollouts.",
    (CreditParams, "stop"): "Stop strings of the rollouts.",
    (CreditParams, "seed"): "Base seed of the rollouts.",
    (CreditParams, "steps"): "How a response is split into steps.",
    (EvalParams, "max_tokens"): "Max new tokens per answer.",
    (EvalParams, "stop"): "Stop strings.",
    (EvalParams, "seed"): "Base seed of the pass@k samples.",
    (PairParams, "seed"): "Seed of the choice among candidates.",
}


class ModelSpec(Strict):
    name: str = Field(
        min_length=1, max_length=1024,
        description="Base model: a Hugging Face id (e.g. Qwen/Qwen2.5-Math-1.5B) or a path on the storage volume.",
    )
    revision: str | None = Field(None, max_length=256, description="Hugging Face revision (branch, tag or commit).")
    token_secret: SecretKeyRef | None = Field(
        None, description="Secret with a Hugging Face token, passed as HF_TOKEN to every pod that loads the model."
    )
    scratch: ScratchSpec | None = Field(
        None, description="Initialise a tiny model from scratch (built by the prepare stage) instead of loading "
        "`name`, which then only labels it. For CPU examples such as the star graph.",
    )


class DataSpec(Strict):
    task: Task = Field(description="Answer format and grader: gsm8k (final number), math (boxed), sequence (star graph), "
                     "arithmetic (the generated task: `#### N` on its own line, no fallbacks).")
    source: DataSourceSpec = Field(description="Train and test questions.")
    synthetic_size: int | None = Field(
        None, ge=1, le=10000000,
        description="|D_syn|: training questions (with their synthetic solutions) used for SFT and sampling; "
        "unset: all of them.",
    )
    prompt: PromptSpec = Field(default_factory=PromptSpec, description="Prompt shared by every stage.")


class TrainStageSpec(Checked):
    enabled: bool = Field(True, description="Run this stage (disabled stages and what only they feed are left out).")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Job activeDeadlineSeconds: the stage fails when its Job runs longer (unset: no limit).",
    )
    params: TrainParams = Field(default_factory=TrainParams, description="Training hyperparameters.")
    select: SelectionParams | None = Field(
        None, description="Score the policy on the validation split every `everyEpochs` (greedy pass@1) and keep "
        "the best checkpoint instead of the last (the paper's practice; needs a validation split). For SFT it "
        "applies to every |D_syn| sweep point.",
    )

    rules: ClassVar[tuple[CrossFieldRule, ...]] = (
        CrossFieldRule(
            "!has(self.select) || !has(self.params.zeroStage) || self.params.zeroStage != 3",
            "select scores the policy on one rank, which needs the whole weights: use zeroStage 0, 1 or 2",
            ".select", lambda s: s.select is None or s.params.zero_stage != 3,
        ),
    )


class RftStageSpec(TrainStageSpec):
    init: Literal["base", "sft"] = Field("sft", description="Start RFT from the base model or continue the SFT policy.")


class SamplingStageSpec(Strict):
    enabled: bool = Field(True, description="Sample the SFT policy (needed by RFT, credit and both DPO stages).")
    max_questions: int | None = Field(
        None, ge=1, description="Sample only the first N of the |D_syn| training questions (default: all).",
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Job activeDeadlineSeconds: the stage fails when its Job runs longer (unset: no limit).",
    )
    params: SamplingParams = Field(default_factory=SamplingParams, description="Sampling hyperparameters.")


class CreditStageSpec(Strict):
    enabled: bool = Field(True, description="Monte-Carlo per-step credit on the negatives (finds the first pits).")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Job activeDeadlineSeconds: the stage fails when its Job runs longer (unset: no limit).",
    )
    params: CreditParams = Field(default_factory=CreditParams, description="Credit-assignment hyperparameters.")


class EvalStageSpec(Strict):
    enabled: bool = Field(True, description="Evaluate every produced policy on the test split.")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Job activeDeadlineSeconds: the stage fails when its Job runs longer (unset: no limit).",
    )
    max_questions: int | None = Field(None, ge=1, description="Use only the first N test questions.")
    split: Literal["test", "validation"] = Field(
        "test", description="Questions the policies are evaluated on: `validation` while choosing "
        "hyperparameters, `test` only for the final choice.",
    )
    train_questions: int = Field(
        0, ge=0, le=100000,
        description="Also evaluate pi_sft on its first N training questions (memorisation check); 0 = off.",
    )
    params: EvalParams = Field(default_factory=EvalParams, description="Evaluation hyperparameters.")


def _needs_sampling(stages: StagesSpec) -> bool:
    return stages.sampling.enabled or not (
        stages.rft.enabled or stages.credit.enabled or stages.step_dpo.enabled or stages.outcome_dpo.enabled
    )


class StagesSpec(Checked):
    sft: TrainStageSpec = Field(
        default_factory=TrainStageSpec,
        description="SFT on D_syn. Disabled: the base model is used as the SFT policy.",
    )
    sampling: SamplingStageSpec = Field(default_factory=SamplingStageSpec, description="Sample the SFT policy and grade.")
    rft: RftStageSpec = Field(default_factory=RftStageSpec, description="RFT on self-generated positives.")
    credit: CreditStageSpec = Field(default_factory=CreditStageSpec, description="Per-step credit on negatives.")
    step_dpo: TrainStageSpec = Field(default_factory=TrainStageSpec, description="Per-step DPO (reference: SFT).")
    outcome_dpo: TrainStageSpec = Field(
        default_factory=TrainStageSpec, description="Baseline: outcome-level DPO (reference: SFT)."
    )
    eval: EvalStageSpec = Field(default_factory=EvalStageSpec, description="Evaluation of every policy.")
    pairs: PairParams = Field(default_factory=PairParams, description="How RFT data and DPO pairs are built.")

    rules: ClassVar[tuple[CrossFieldRule, ...]] = (
        CrossFieldRule(
            "!self.stepDpo.enabled || self.credit.enabled", "stepDpo needs credit.enabled (pairs come from pits)",
            ".stepDpo.enabled", lambda s: not s.step_dpo.enabled or s.credit.enabled,
        ),
        CrossFieldRule(
            "self.sampling.enabled || !(self.rft.enabled || self.credit.enabled || self.stepDpo.enabled "
            "|| self.outcomeDpo.enabled)",
            "rft, credit, stepDpo and outcomeDpo need sampling.enabled", ".sampling.enabled", _needs_sampling,
        ),
    )


class SamplerSpec(Strict):
    image: Image = Field("vllm/vllm-openai:v0.32.0", description="vLLM OpenAI server image (run as is).")
    replicas: int = Field(1, ge=1, le=64, description="vLLM replicas per served policy.")
    tensor_parallel: int = Field(1, ge=1, le=16, description="--tensor-parallel-size; also the GPUs per replica.")
    gpus: int | None = Field(
        None, ge=0, le=16, description="GPUs each replica requests; unset: tensorParallel. 0: a CPU sampler (an image "
        "with vLLM's CPU build, float32, its KV cache in memory) for CPU clusters and tests.",
    )
    cpu_kv_cache_gb: int = Field(1, ge=1, le=4096, description="CPU samplers (gpus 0): memory for the KV cache, GiB.")
    max_model_len: int = Field(2048, ge=64, le=1048576, description="--max-model-len.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="--gpu-memory-utilization.")
    extra_args: list[str] = Field(default_factory=list, description="More `vllm serve` arguments, appended as given.")
    shm_size: ShmSize = Field("8Gi", description="Size of the in-memory /dev/shm volume.")
    startup_timeout_s: int = Field(1800, ge=60, le=86400, description="Time allowed to load the model.")
    client_wait_s: int = Field(
        600, ge=10, le=86400,
        description="How long a stage waits for its sampler's /health while the sampler is down (a restart, a "
        "rolling update, a resume) before the stage fails; requests are resent once it is back.",
    )
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="CPU and memory of each replica.")
    local_backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="`negrl run` only: serve policies with a local vLLM server, with transformers "
        "behind the same OpenAI API, or `auto` (vLLM when installed). Ignored on a cluster.",
    )


class WorkerSpec(Strict):
    image: Image = Field(
        "ghcr.io/negrl/negrl-worker:0.1.0",
        description="Image with the `negrl` command (Dockerfile target `worker`) for data, rollout and eval Jobs.",
    )
    shards: int = Field(1, ge=1, le=1024, description="Pods of the sample and credit Jobs (Indexed Job shards).")
    backoff_limit: int = Field(2, ge=0, le=100, description="Pod retries before a stage Job fails.")
    run_as_user: int = Field(1000, ge=1, le=2147483647, description="Non-root user of the restricted pods.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Resources of each worker pod.")


class TrainerSpec(Strict):
    image: Image | None = Field(None, description="Training image; unset: worker.image.")
    gpus_per_node: int = Field(8, ge=0, le=64, description="GPUs per training pod (torchrun processes); 0: CPU.")
    nodes: int = Field(1, ge=1, le=256, description="Training pods; more than one: Indexed Job + headless Service.")
    zero_stage: Literal[0, 1, 2, 3] | None = Field(None, description="DeepSpeed ZeRO stage for every training stage.")
    precision: Literal["auto", "bf16", "fp32"] | None = Field(None, description="Precision for every training stage.")
    backoff_limit: int = Field(1, ge=0, le=100, description="Pod retries before a one-pod training Job fails.")
    launcher: Literal["Job", "JobSet"] = Field(
        "Job",
        description="Job: an Indexed Job (+ headless Service); when a pod of several is lost, the operator deletes "
        "the Job and starts the whole group again. JobSet (needs the JobSet controller): a JobSet whose "
        "failurePolicy.maxRestarts recreates every pod of the group itself (Kubeflow Trainer's convention).",
    )
    max_restarts: int = Field(
        3, ge=0, le=100,
        description="Multi-node: restarts of the whole training group after a lost rank (by the operator or "
        "JobSet; also torchrun's worker restarts); every pod is new and training resumes from the last checkpoint.",
    )
    shm_size: ShmSize = Field("32Gi", description="Size of the in-memory /dev/shm volume.")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="CPU and memory of each training pod.")


class StorageSpec(Strict):
    claim_name: ObjectName = Field(description="PersistentVolumeClaim shared by every pod: ReadWriteMany (NFS, CephFS, a CSI file store). "
                                        "A ReadWriteOnce claim works only while every pod runs on one node; the "
                                        "StorageShared condition says so.")
    mount_path: str = Field("/data", pattern=r"^/", max_length=4096, description="Where the volume is mounted in every pod.")
    path: str = Field(
        "negrl", pattern=r"^[^/].*$|^$", max_length=4096,
        description="Folder in the volume; artifacts go to <mountPath>/<path>/<namespace>/<experiment>/<uid>/<stage>/.",
    )
    on_delete: Literal["Retain", "Delete"] = Field(
        "Retain", description="Retain: deleting the experiment keeps its artifacts. Delete: a Job removes its folder "
                              "<mountPath>/<path>/<namespace>/<experiment>/<uid> (best effort: only while the "
                              "operator runs).",
    )


class Toleration(Strict):
    key: str | None = Field(None, description="Taint key; unset with operator Exists: every taint.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; unset: all."
    )
    toleration_seconds: int | None = Field(None, description="NoExecute: how long the pod stays after the taint.")


class SchedulingSpec(Strict):
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Pod tolerations.")
    priority_class_name: ObjectName | None = Field(None, description="Pod priorityClassName.")
    queue_name: Annotated[ObjectName, Field(max_length=63)] | None = Field(
        None, description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name, so at most 63 characters)."
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations added to every pod (e.g. for autoscalers or service meshes)."
    )


class SchedulingSpecs(Strict):
    sampler: SchedulingSpec = Field(default_factory=SchedulingSpec, description="vLLM sampler pods.")
    trainer: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Training pods.")
    worker: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Data, rollout and eval pods.")
    teacher: SchedulingSpec = Field(
        default_factory=SchedulingSpec, description="The served teacher's vLLM pods (teacher.served): e.g. a node "
        "pool of its own and a Kueue LocalQueue. The synthesize stage's pods are worker pods.",
    )


class SweepSpec(Strict):
    sft_multipliers: list[int] = Field(
        default_factory=list, max_length=16,
        description="Extra SFT runs on k*|D_syn| questions (nested prefixes of the same data, each evaluated), "
        "for the data-scaling curve. Every point runs stages.sft's epochs over its own data (at least "
        "params.minSteps steps), so each consumes its data; use stages.sft.select to evaluate the best "
        "checkpoint of each point on test.",
    )

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.sft_multipliers)) != len(self.sft_multipliers) or any(k < 2 for k in self.sft_multipliers):
            raise ValueError("sftMultipliers must be distinct integers >= 2")
        return self


# SweepSpec checks its points itself; the API server needs them as CEL (distinct: list-type set, crd.py).
EXTERNAL_RULES[SweepSpec] = (
    CrossFieldRule("self.sftMultipliers.all(k, k >= 2)",
                   "sweep.sftMultipliers must be distinct integers >= 2 (each k adds an SFT run on k*|D_syn|)",
                   ".sftMultipliers"),
)


# PretrainSpec checks its chain lengths itself (distinct); the API server needs the rule as CEL.
EXTERNAL_RULES[PretrainSpec] = (
    CrossFieldRule("self.chainLengths.all(c, self.chainLengths.exists_one(d, d == c))",
                   "chainLengths must be distinct: list each chain length once", ".chainLengths"),
)


def scratch_teacher(spec: ExperimentSpec) -> TeacherScratchSpec | None:
    """The teacher the experiment trains itself (teacher.served.scratch), if any."""
    served = spec.teacher.served if spec.teacher is not None else None
    return served.scratch if served is not None else None


def _pretraining(spec: ExperimentSpec) -> PretrainSpec | None:
    return spec.model.scratch.pretrain if spec.model.scratch is not None else None


def _teacher_training(spec: ExperimentSpec) -> PretrainSpec | None:
    teacher = scratch_teacher(spec)
    return teacher.training if teacher is not None else None


def _needs_arithmetic(family: PretrainSpec | None, spec: ExperimentSpec) -> bool:
    """A training family of the arithmetic task (pretraining, a scratch teacher's) needs that source."""
    return family is None or spec.data.source.kind == "arithmetic"


def _within_source_range(family: PretrainSpec | None, spec: ExperimentSpec) -> bool:
    """Its counts stay within the source's vocabulary."""
    return family is None or family.max_value is None or family.max_value <= spec.data.source.max_value


def _within_source_lexicon(family: PretrainSpec | None, spec: ExperimentSpec) -> bool:
    """Its verbs are its own or stay within the source's vocabulary."""
    return family is None or family.lexicon is None or family.own_verbs or family.lexicon <= spec.data.source.lexicon


_SCRATCH_TEACHER = "has(self.teacher) && has(self.teacher.served) && has(self.teacher.served.scratch)"

# TeacherSpec, TeacherServedSpec, TeacherEndpointSpec and SynthesisParams check themselves; the API server needs
# them as CEL.
EXTERNAL_RULES[TeacherServedSpec] = (
    CrossFieldRule("has(self.model) != has(self.scratch)", ONE_TEACHER_MODEL, ".model"),
)
EXTERNAL_RULES[TeacherSpec] = (
    CrossFieldRule("has(self.endpoint) != has(self.served)",
                   "teacher needs exactly one of endpoint (an OpenAI-compatible API) and served (a model the "
                   "operator serves)", ".endpoint"),
)
_TAKEN_NAMES = ", ".join(f"'{name}'" for name in STAGE_POD_ENV)
EXTERNAL_RULES[TeacherEndpointSpec] = (
    CrossFieldRule(f"!has(self.apiKeyEnv) || !(self.apiKeyEnv in [{_TAKEN_NAMES}])", KEY_ENV_TAKEN, ".apiKeyEnv"),
)
EXTERNAL_RULES[SynthesisParams] = (
    CrossFieldRule("!has(self.mode) || self.mode != 'problems' || (has(self.examples) && size(self.examples) > 0)",
                   "mode problems needs examples: the seed problems the teacher imitates", ".examples"),
)


class MlflowCredentials(Strict):
    """Secrets the stage pods get as MLflow's own environment variables (cluster only)."""

    token: SecretKeyRef | None = Field(None, description="Bearer token, as MLFLOW_TRACKING_TOKEN.")
    username: SecretKeyRef | None = Field(None, description="Basic-auth user, as MLFLOW_TRACKING_USERNAME.")
    password: SecretKeyRef | None = Field(None, description="Basic-auth password, as MLFLOW_TRACKING_PASSWORD.")


class TrackingSpec(TrackingParams):
    mlflow_credentials: MlflowCredentials = Field(
        default_factory=MlflowCredentials, description="Secrets for the MLflow server; `negrl run` uses the "
        "MLFLOW_TRACKING_* variables of its own environment instead.",
    )

    def params(self) -> TrackingParams:
        """The part every stage config carries (secrets stay in the pod's environment)."""
        return TrackingParams.model_validate(self.model_dump(include=set(TrackingParams.model_fields)))


_SFT_GLOBAL_BATCH = ("self.stages.sft.params.microBatchSize * self.stages.sft.params.gradientAccumulation * "
                     "(self.trainer.gpusPerNode > 0 ? self.trainer.gpusPerNode : 1) * self.trainer.nodes")


def _sweep_consumes_its_data(spec: ExperimentSpec) -> bool:
    """Every sweep point's questions fit in the SFT step cap, if there is one (steps x global batch)."""
    params, trainer = spec.stages.sft.params, spec.trainer
    if not spec.sweep.sft_multipliers or params.max_steps is None or spec.data.synthetic_size is None:
        return True
    batch = params.micro_batch_size * params.gradient_accumulation * max(1, trainer.gpus_per_node) * trainer.nodes
    return params.max_steps * batch >= max(spec.sweep.sft_multipliers) * spec.data.synthetic_size


def _selected_stages(spec: ExperimentSpec) -> list[str]:
    stages = spec.stages
    return [name for name, block in (("sft", stages.sft), ("rft", stages.rft), ("stepDpo", stages.step_dpo),
                                     ("outcomeDpo", stages.outcome_dpo)) if block.select is not None]


STORAGE_REQUIRED = (
    "spec.storage is required on a cluster: name the ReadWriteMany PersistentVolumeClaim every pod mounts "
    "(storage: {claimName: ...}); only `negrl run` works without it (it writes under --workdir)"
)


class ExperimentSpec(Checked):
    model: ModelSpec = Field(description="Base model.")
    data: DataSpec = Field(description="Questions, task and |D_syn|.")
    stages: StagesSpec = Field(default_factory=StagesSpec, description="Which stages run, and their hyperparameters.")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="vLLM servers of the policies.")
    worker: WorkerSpec = Field(default_factory=WorkerSpec, description="Data, rollout and evaluation Jobs.")
    trainer: TrainerSpec = Field(default_factory=TrainerSpec, description="DeepSpeed training Jobs.")
    storage: StorageSpec | None = Field(
        None, description="Shared volume for data, samples and models. Required on a cluster; `negrl run` "
        "ignores it and writes under --workdir.",
    )
    tracking: TrackingSpec = Field(
        default_factory=TrackingSpec, description="Training curves and stage figures: TensorBoard files, MLflow runs."
    )
    scheduling: SchedulingSpecs = Field(default_factory=SchedulingSpecs, description="Placement per component.")
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=16,
        description="Each seed runs the whole chain (added to every stage's seed); stage names get -s<seed> "
        "when there are several.",
    )
    sweep: SweepSpec = Field(default_factory=SweepSpec, description="|D_syn| sweep of the SFT baseline.")
    teacher: TeacherSpec | None = Field(
        None, description="A capable teacher writes D_syn first (a `synthesize` stage before SFT); SFT, sampling "
        "and the pairs then read its output instead of the prepared training split. Unset: the dataset's "
        "reference solutions are D_syn.",
    )
    suspend: bool = Field(False, description="Scale samplers to zero, suspend running Jobs and start none.")
    failure_policy: Literal["FailFast", "Continue"] = Field(
        "FailFast",
        description="FailFast: the first failed stage fails the experiment. Continue: stages that do not depend on "
        "a failed stage (e.g. other seeds' branches) go on; the experiment ends Degraded (some policy evaluated) or "
        "Failed, naming the failed stages.",
    )
    retry: int = Field(
        0, ge=0,
        description="Raise it (e.g. kubectl patch --type merge -p '{\"spec\":{\"retry\":1}}') to rerun the failed "
        "stages: their Jobs are deleted and created again, finished stages are kept; also reopens a Failed or "
        "Degraded experiment.",
    )

    rules: ClassVar[tuple[CrossFieldRule, ...]] = (
        CrossFieldRule(
            f"size(self.sweep.sftMultipliers) == 0 || !has(self.stages.sft.params.maxSteps) || "
            f"!has(self.data.syntheticSize) || self.sweep.sftMultipliers.all(k, self.stages.sft.params.maxSteps * "
            f"{_SFT_GLOBAL_BATCH} >= k * self.data.syntheticSize)",
            "a sweep point cannot consume its data: stages.sft.params.maxSteps x the global batch (microBatchSize x "
            "gradientAccumulation x trainer GPUs x nodes) is below the largest point's questions (sweep.sftMultipliers "
            "x data.syntheticSize); remove maxSteps (each point then runs its epochs) or raise it",
            ".sweep.sftMultipliers", _sweep_consumes_its_data,
        ),
        CrossFieldRule(
            "!(has(self.stages.sft.select) || has(self.stages.rft.select) || has(self.stages.stepDpo.select) || "
            "has(self.stages.outcomeDpo.select)) || (has(self.trainer.zeroStage) ? self.trainer.zeroStage != 3 : true)",
            "a stage's select scores the policy on one rank, which needs the whole weights: trainer.zeroStage 3 "
            "cannot be combined with select; use 0, 1 or 2", ".trainer.zeroStage",
            lambda s: not _selected_stages(s) or s.trainer.zero_stage != 3,
        ),
        CrossFieldRule(
            "!(has(self.stages.sft.select) || has(self.stages.rft.select) || has(self.stages.stepDpo.select) || "
            "has(self.stages.outcomeDpo.select)) || self.data.source.validationSize > 0 || "
            "has(self.data.source.validationPath)",
            "a stage's select needs a validation split: data.source.validationSize (generated sources) or "
            "data.source.validationPath", ".data.source.validationSize",
            lambda s: not _selected_stages(s) or s.data.source.validation_size > 0
            or s.data.source.validation_path is not None,
        ),
        CrossFieldRule(
            "self.data.source.kind != 'arithmetic' || self.data.task == 'arithmetic'",
            "source kind arithmetic is graded strictly (the line checker's `#### N`, no last-number fallback): "
            "set data.task arithmetic", ".data.task",
            lambda s: s.data.source.kind != "arithmetic" or s.data.task == "arithmetic",
        ),
        CrossFieldRule(
            "!has(self.model.scratch) || !has(self.model.scratch.pretrain) || self.data.source.kind == 'arithmetic'",
            "pretraining uses the arithmetic task's pretrain family, so it needs data.source.kind arithmetic: "
            "set that source or remove model.scratch.pretrain", ".model.scratch.pretrain",
            lambda s: _needs_arithmetic(_pretraining(s), s),
        ),
        CrossFieldRule(
            "!has(self.model.scratch) || !has(self.model.scratch.pretrain) || "
            "!has(self.model.scratch.pretrain.maxValue) || "
            "self.model.scratch.pretrain.maxValue <= self.data.source.maxValue",
            "must be at most data.source.maxValue, since the vocabulary is the "
            "source's: lower it or unset it", ".model.scratch.pretrain.maxValue",
            lambda s: _within_source_range(_pretraining(s), s),
        ),
        CrossFieldRule(
            "!has(self.model.scratch) || !has(self.model.scratch.pretrain) || "
            "!has(self.model.scratch.pretrain.lexicon) || "
            "(has(self.model.scratch.pretrain.ownVerbs) && self.model.scratch.pretrain.ownVerbs) || "
            "self.model.scratch.pretrain.lexicon <= (has(self.data.source.lexicon) ? self.data.source.lexicon : 0)",
            "must be at most data.source.lexicon, since the task's verbs are the source's: lower it, unset it "
            "or set ownVerbs",
            ".model.scratch.pretrain.lexicon",
            lambda s: _within_source_lexicon(_pretraining(s), s),
        ),
        CrossFieldRule(
            f"!({_SCRATCH_TEACHER}) || self.data.source.kind == 'arithmetic'",
            "a scratch teacher trains on the arithmetic task's pretrain bucket, so it needs data.source.kind "
            "arithmetic: set that source or give teacher.served.model instead", ".teacher.served.scratch",
            lambda s: _needs_arithmetic(_teacher_training(s), s),
        ),
        CrossFieldRule(
            f"!({_SCRATCH_TEACHER}) || !has(self.teacher.served.scratch.training.maxValue) || "
            "self.teacher.served.scratch.training.maxValue <= self.data.source.maxValue",
            "must be at most data.source.maxValue, since the vocabulary is the source's: lower it or unset it",
            ".teacher.served.scratch.training.maxValue",
            lambda s: _within_source_range(_teacher_training(s), s),
        ),
        CrossFieldRule(
            f"!({_SCRATCH_TEACHER}) || !has(self.teacher.served.scratch.training.lexicon) || "
            "(has(self.teacher.served.scratch.training.ownVerbs) && self.teacher.served.scratch.training.ownVerbs) || "
            "self.teacher.served.scratch.training.lexicon <= "
            "(has(self.data.source.lexicon) ? self.data.source.lexicon : 0)",
            "must be at most data.source.lexicon, since the task's verbs are the source's: lower it, unset it "
            "or set ownVerbs", ".teacher.served.scratch.training.lexicon",
            lambda s: _within_source_lexicon(_teacher_training(s), s),
        ),
        CrossFieldRule(
            "size(self.sweep.sftMultipliers) == 0 || (has(self.data.syntheticSize) && self.stages.sft.enabled)",
            "sweep.sftMultipliers needs data.syntheticSize and stages.sft.enabled", ".sweep.sftMultipliers",
            lambda s: not s.sweep.sft_multipliers or (s.data.synthetic_size is not None and s.stages.sft.enabled),
        ),
        CrossFieldRule(
            "(self.data.source.kind == 'stargraph') == (self.data.task == 'sequence')",
            "task sequence goes with source kind stargraph (and only with it)", ".data.task",
            lambda s: (s.data.source.kind == "stargraph") == (s.data.task == "sequence"),
        ),
        CrossFieldRule(
            "self.stages.eval.split != 'validation' || self.data.source.validationSize > 0 || "
            "has(self.data.source.validationPath)",
            "stages.eval.split validation needs data.source.validationSize (generated sources) or validationPath",
            ".stages.eval.split",
            lambda s: s.stages.eval.split != "validation" or s.data.source.validation_size > 0
            or s.data.source.validation_path is not None,
        ),
        # Transition rules (checked on update only): stages that ran or run keep what they read when
        # they started, so a change to these would silently mix two experiments in one.
        CrossFieldRule("self.storage == oldSelf.storage",
                       "storage is immutable: finished stages' artifacts are there; create a new experiment",
                       ".storage"),
        CrossFieldRule("self.model == oldSelf.model",
                       "model is immutable: stages already started from it; create a new experiment", ".model"),
        CrossFieldRule("self.seeds == oldSelf.seeds",
                       "seeds are immutable: each seed's branch is named after it; create a new experiment", ".seeds"),
    )

    @model_validator(mode="after")
    def _unique_seeds(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        return self


# Rules on the whole object (metadata.name ends up in child names, labels and DNS names).
ROOT_RULES: tuple[CrossFieldRule, ...] = (
    CrossFieldRule(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",
        "metadata.name must be a DNS-1035 label (a-z, 0-9, '-', starts with a letter) of at most 63 characters",
        "",  # metadata has no schema of its own, so no fieldPath; the message names the field
    ),
    # Only the API server checks this (and ClusterExperimentSpec, what the operator reads): `negrl run`
    # validates the same model without a volume.
    CrossFieldRule("has(self.spec.storage)", STORAGE_REQUIRED, ".spec.storage"),
)


class ClusterExperimentSpec(ExperimentSpec):
    """The spec as the operator on a cluster accepts it: what the root rules require beyond the model."""

    @model_validator(mode="after")
    def _runs_on_a_cluster(self):
        if self.storage is None:  # the messages name their field: "spec." is added where they are shown
            raise ValueError(STORAGE_REQUIRED.removeprefix("spec."))
        return self


class ObjectMeta(BaseModel):
    name: str
    namespace: str = "default"
    model_config = {"extra": "allow"}


class NegRLExperiment(Strict):
    """A whole manifest as `kubectl apply` sends it (status is the operator's, so it is not accepted)."""

    api_version: Literal["negrl.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["NegRLExperiment"] = KIND
    metadata: ObjectMeta
    spec: ExperimentSpec

    @model_validator(mode="after")
    def _name_is_dns_label(self):
        name = self.metadata.name
        if not (re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63):
            raise ValueError(f"metadata.name {name!r}: {ROOT_RULES[0].message}")
        return self
