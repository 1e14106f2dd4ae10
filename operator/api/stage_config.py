"""The stage-config contract: what every stage Job (and `negrl run`) receives as JSON.

Hyperparameter blocks (`...Params`) are embedded unchanged in the NegRLExperiment spec, so each
default lives here and only here. Stage configs add the wiring: paths, the sampler's URL, the
shard. Pure pydantic: importable by the operator image (no torch) and by the workers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from negrl_operator.api.exit_code import ConfigError
from negrl_operator.api.value_rule import QUESTION_PLACEHOLDER

Task = Literal["gsm8k", "math", "sequence", "arithmetic"]
STAGE_CONFIG_PATH = "/etc/negrl/stage.json"
SEED_MAX = 2**31 - 1  # experiment seeds (spec.seeds): non-negative, added to every stage seed (which is >= 0)
DEFAULT_ZERO_STAGE, DEFAULT_PRECISION = 2, "auto"  # TrainParams: unless the stage or spec.trainer sets them


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a manifest or a config must not be silently ignored.

    Fields are camelCase on the wire (Kubernetes convention) and snake_case in Python; both parse."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
        serialize_by_alias=True,
    )


class PromptSpec(Strict):
    template: Annotated[str, QUESTION_PLACEHOLDER] = Field(
        "Question: {question}\nAnswer:", min_length=1, max_length=8192,
        description="Prompt template; `{question}` is replaced by the question text.",
    )
    chat_template: bool = Field(
        False, description="Wrap the formatted prompt in the model's chat template (when it has one)."
    )

    def render(self, question: str) -> str:
        return self.template.replace("{question}", question)


class StepSplitSpec(Strict):
    min_chars: int = Field(8, ge=0, description="Pieces shorter than this are merged into the next step.")
    max_steps: int = Field(12, ge=1, le=256, description="Cap on steps; the tail is merged into the last.")
    delimiter: Literal["line", "space"] = Field(
        "line", description="`line`: a step is a non-empty line; `space`: a step is one word (star graph)."
    )


class ServerRef(Strict):
    base_url: str = Field(description="Base URL of an OpenAI-compatible server, e.g. http://host:8000/v1.")
    model: str = Field(description="Model name the server serves (vLLM: the path or --served-model-name).")
    timeout_s: float = Field(300.0, gt=0, description="Per-request timeout.")
    max_concurrency: int = Field(64, ge=1, le=4096, description="Requests in flight at once.")
    max_retries: int = Field(5, ge=0, le=20, description="Retries on timeouts, 500 and 429 of a server that is up.")
    health_wait_s: float = Field(
        300.0, gt=0, le=86400,
        description="While the server is down (connection refused, 502/503/504: a restart or a rolling update), "
        "wait up to this long for its /health before the stage fails.",
    )


class SamplingParams(Strict):
    samples_per_question: int = Field(4, ge=1, le=1024, description="M: samples drawn per question.")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=32768, description="Max new tokens per sample.")
    stop: list[str] = Field(default_factory=list, description="Stop strings.")
    seed: int = Field(0, ge=0, description="Base seed; each question derives its own from it.")


class CreditParams(Strict):
    rollouts: int = Field(5, ge=1, le=64, description="K: rollouts per step prefix (Best-of-K).")
    estimate: Literal["best_of_k", "soft", "mean"] = Field(
        "best_of_k", description="`best_of_k`: Q=1 if any rollout is correct; `soft`: 1-(1-q)^K; `mean`: q, the "
        "fraction of correct rollouts. With `soft` and `mean` the pit is the step of least advantage and every "
        "prefix gets all K rollouts."
    )
    strategy: Literal["full", "early_stop", "bisect"] = Field(
        "early_stop", description="Pit search: every step, left-to-right with early stop, or binary search."
    )
    negatives_per_question: int = Field(8, ge=1, le=1024, description="Negatives scanned per question.")
    temperature: float | None = Field(
        None, ge=0.0, le=2.0,
        description="Rollout temperature; unset: the sampling stage's, so the Best-of-K policy is the "
        "policy that produced the negatives.",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, le=32768, description="Max new tokens per rollout.")
    stop: list[str] = Field(default_factory=list)
    seed: int = Field(0, ge=0)
    steps: StepSplitSpec = Field(default_factory=StepSplitSpec)


class PairParams(Strict):
    rft_per_question: int = Field(4, ge=1, le=1024, description="m: de-duplicated positives kept per question.")
    step_pairs_per_question: int = Field(
        8, ge=1, le=1024,
        description="Per-step DPO pairs per question (with matchCounts, both kinds use the smaller of the two caps).",
    )
    outcome_pairs_per_question: int = Field(
        8, ge=1, le=1024,
        description="Outcome DPO pairs per question (with matchCounts, both kinds use the smaller of the two caps).",
    )
    chosen_source: Literal["self", "synthetic", "rollout"] = Field(
        "self",
        description="Chosen side of a per-step pair (and, with matchCounts, of its outcome twin): `self` a "
        "self-generated correct, finished sample (round-robin from a seeded offset), `synthetic` the question's "
        "synthetic solution, `rollout` the negative's own steps before the pit followed by a correct, finished "
        "rollout from that prefix (so a `rollout` outcome twin shares that prefix with its rejected side). "
        "Without matchCounts, outcome pairs always take a self-generated positive.",
    )
    match_counts: bool = Field(
        True,
        description="When both DPO stages run, outcome and per-step DPO pairs come from the same negatives, "
        "built after credit assignment: each negative with a usable pit that makes a per-step pair also makes one outcome pair "
        "with the same chosen text, whose rejected side is the negative's full response (EOS unless it was "
        "cut by max_tokens) instead of its cut after the pit; both files hold as many pairs, in the same "
        "order. Off: outcome pairs from every finished, distinct negative (no credit needed).",
    )
    seed: int = Field(0, ge=0)


class EvalParams(Strict):
    k: int = Field(4, ge=1, le=1024, description="k of sampled pass@k (k samples per question).")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Temperature of the pass@k samples.")
    max_tokens: int = Field(512, ge=1, le=32768)
    stop: list[str] = Field(default_factory=list)
    seed: int = Field(0, ge=0)


class TrainParams(Strict):
    learning_rate: float = Field(1e-5, gt=0, le=1.0)
    epochs: float = Field(3.0, gt=0, le=1000)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    min_steps: int | None = Field(
        None, ge=1, le=10_000_000,
        description="Run at least this many optimizer steps: more epochs when the data is small (a floor, so "
        "the smallest point of a |D_syn| sweep is not under-trained; keep a validation selection on).",
    )
    micro_batch_size: int = Field(4, ge=1, le=4096, description="Sequences per GPU per micro-step.")
    gradient_accumulation: int = Field(1, ge=1, le=4096)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(1024, ge=8, le=131072, description="Prompt+response tokens; longer is truncated.")
    beta: float = Field(0.1, gt=0, le=100, description="DPO beta.")
    nll_weight: float = Field(0.0, ge=0, description="Weight of an NLL term on the chosen response (DPO).")
    zero_stage: Literal[0, 1, 2, 3] | None = Field(
        None, description="DeepSpeed ZeRO stage (0-3); unset: trainer.zeroStage, else 2.",
    )
    precision: Literal["auto", "bf16", "fp32"] | None = Field(
        None, description="`auto`: bf16 on GPU, fp32 on CPU; unset: trainer.precision, else auto.",
    )
    gradient_checkpointing: bool = False
    packing: bool = Field(False, description="Pack SFT sequences to max_length.")
    checkpoint_every_steps: int = Field(0, ge=0, description="Resumable checkpoint period; 0 = only at the end.")
    seed: int = Field(0, ge=0)


class SelectionParams(Strict):
    """Checkpoint selection on the validation split (the paper's practice): greedy accuracy every
    `everyEpochs`, and the stage's policy is the checkpoint that scored best (the earliest on a tie)."""

    every_epochs: float = Field(0.5, gt=0, le=100, description="Evaluate (and checkpoint) every this many epochs, "
                                "and after the last step.")
    max_questions: int = Field(200, ge=1, le=100000, description="Validation questions evaluated (greedy pass@1).")
    max_tokens: int = Field(256, ge=1, le=32768, description="Max new tokens per validation answer.")
    batch_size: int = Field(64, ge=1, le=4096, description="Questions generated at once.")


class SelectionConfig(SelectionParams):
    questions: str = Field(description="The validation questions file ({id, question, answer}).")
    task: Task


class TrackingParams(Strict):
    """Where a stage's curves and figures go besides its artifacts (not an input: changing it never
    reruns a stage)."""

    tensorboard: bool = Field(
        True, description="Write TensorBoard event files into each stage's folder (<stage>/tensorboard): "
        "training curves, and the headline figures of the sample, credit and eval stages.",
    )
    mlflow_uri: str | None = Field(
        None, max_length=2048,
        description="MLflow tracking URI (e.g. http://mlflow.mlflow:5000). Set: one MLflow run per experiment "
        "with a nested run per stage (params: the stage config; metrics: curves and summary; artifacts). "
        "Needs the MLflow client (`pip install negrl[tracking]`, in the worker image).",
    )
    mlflow_experiment: str = Field(
        "negrl", min_length=1, max_length=256, description="MLflow experiment that holds the runs."
    )


class StageBase(Strict):
    experiment: str = Field("local", description="Experiment name (labels, metrics).")
    output_dir: str = Field(description="Artifact folder of this stage; manifest.json is written last.")
    shard_index: int = Field(0, ge=0)
    shard_count: int = Field(1, ge=1)
    metrics_port: int = Field(0, ge=0, le=65535, description="Serve /metrics here; 0 = off.")
    tracking: TrackingParams = Field(default_factory=TrackingParams, description="TensorBoard and MLflow.")

    @model_validator(mode="after")
    def _shard_in_range(self):
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} must be < shard_count {self.shard_count}")
        return self


class SampleStageConfig(StageBase):
    kind: Literal["sample"] = "sample"
    server: ServerRef
    task: Task
    questions: str = Field(description="JSONL of {id, question, answer[, solution]}.")
    max_questions: int | None = Field(None, ge=1, description="Use only the first N questions.")
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    params: SamplingParams = Field(default_factory=SamplingParams)


class CreditStageConfig(StageBase):
    kind: Literal["credit"] = "credit"
    server: ServerRef
    task: Task
    samples_dir: str = Field(description="Output folder of the sample stage.")
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    params: CreditParams = Field(default_factory=CreditParams)


PairOutput = Literal["rft", "outcome", "step"]
PAIR_FILES: dict[str, str] = {"rft": "rft.jsonl", "outcome": "outcome_pairs.jsonl", "step": "step_pairs.jsonl"}


class PairsStageConfig(StageBase):
    """Builds, in one folder, the files named in PAIR_FILES for each requested output. `rft` and
    `outcome` need only the samples, so they can run while credit assignment is still going."""

    kind: Literal["pairs"] = "pairs"
    outputs: list[PairOutput] = Field(default_factory=lambda: ["rft", "outcome", "step"], min_length=1)
    samples_dir: str
    credit_dir: str | None = Field(None, description="Output of the credit stage; needed for `step`.")
    questions: str = Field(description="The questions file (synthetic solutions for chosen_source=synthetic).")
    params: PairParams = Field(default_factory=PairParams)

    @model_validator(mode="after")
    def _step_needs_credit(self):
        if "step" in self.outputs and not self.credit_dir:
            raise ValueError("outputs contains 'step': set creditDir to the credit stage's folder")
        return self


class EvaluateStageConfig(StageBase):
    kind: Literal["evaluate"] = "evaluate"
    server: ServerRef
    task: Task
    policy: str = Field("policy", description="Name of the evaluated policy (sft, rft, step_dpo, ...).")
    questions: str
    max_questions: int | None = Field(None, ge=1)
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    params: EvalParams = Field(default_factory=EvalParams)


class TrainStageConfig(StageBase):
    kind: Literal["train"] = "train"
    stage: Literal["sft", "rft", "dpo"]
    model_path: str = Field(description="Initial weights (HF folder or id).")
    reference_path: str | None = Field(None, description="DPO reference model; default: model_path.")
    data: list[str] = Field(
        min_length=1,
        description="JSONL files or stage folders: {prompt, response} or {question, solution} for sft/rft, "
        "{prompt, chosen, rejected} for dpo.",
    )
    max_examples: int | None = Field(None, ge=1, description="Use only the first N examples (|D_syn|).")
    selection: SelectionConfig | None = Field(
        None, description="Keep the checkpoint with the best validation accuracy instead of the last one."
    )
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    params: TrainParams = Field(default_factory=TrainParams, validate_default=True)

    @field_validator("params")
    @classmethod
    def _resolve_engine_defaults(cls, params: TrainParams) -> TrainParams:
        """What runs, written out: a ZeRO stage or precision neither the stage nor spec.trainer set
        (the operator fills spec.trainer's in) takes the default here, the one place it lives."""
        return params.model_copy(update={"zero_stage": DEFAULT_ZERO_STAGE if params.zero_stage is None
                                         else params.zero_stage,
                                         "precision": params.precision or DEFAULT_PRECISION})

    @model_validator(mode="after")
    def _selection_needs_whole_weights(self):
        if self.selection and self.params.zero_stage == 3:
            raise ValueError("selection scores the model on rank 0, which needs the whole weights: use zeroStage "
                             "0, 1 or 2, or turn the stage's `select` off")
        return self


DataSourceKind = Literal["gsm8k-jsonl", "questions-jsonl", "stargraph", "arithmetic"]
GENERATED_SOURCES = ("stargraph", "arithmetic")
PREPARED_TRAIN = "train.jsonl"
PREPARED_TEST = "test.jsonl"
PREPARED_VALIDATION = "validation.jsonl"
PREPARED_PRETRAIN = "pretrain.jsonl"  # the shared base's pretraining family (model.scratch.pretrain)
PREPARED_TEACHER = "teacher.jsonl"  # a scratch teacher's training family (teacher.served.scratch)
TEACHER_MODEL_FOLDER = "teacher-model"  # the scratch teacher before its teacher-sft stage


class DataSourceSpec(Strict):
    """Where the questions come from. `gsm8k-jsonl`: GSM8K lines {question, answer} (the answer's last
    line is `#### N`; the worked answer becomes the synthetic solution). `questions-jsonl`: lines that
    already are questions {id, question, answer[, solution]}. `stargraph`: generated star-graph
    path-finding questions. `arithmetic`: generated multi-step arithmetic word problems with GSM8K-style
    solutions (one step per line, `#### N` last) whose every line can be checked. Generated sources
    need no files: the generator parameters below decide them, and their splits are disjoint."""

    kind: DataSourceKind = Field(description="Source format: gsm8k-jsonl, questions-jsonl, stargraph or arithmetic.")
    train_path: str | None = Field(
        None, description="Training split (JSONL), a path the stage can read (in a cluster: on the storage volume)."
    )
    test_path: str | None = Field(None, description="Test split (JSONL), same rules as trainPath.")
    degree: int = Field(3, ge=2, le=64, description="stargraph: arms around the centre node.")
    path_length: int = Field(5, ge=2, le=64, description="stargraph: nodes on each arm.")
    nodes: int = Field(50, ge=4, le=100000, description="stargraph: size of the node-label vocabulary.")
    quantities: int = Field(
        3, ge=1, le=6, description="arithmetic: people whose counts a problem tracks (1: a single chain, no lookup by "
        "name).",
    )
    chain_length: int = Field(4, ge=1, le=12, description="arithmetic: events (solution lines before `#### N`).")
    max_value: int = Field(
        50, ge=10, le=999,
        description="arithmetic: every count, operand and intermediate value lies in [0, maxValue]; each number "
        "of that range is one token of the scratch tokenizer.",
    )
    interact: float = Field(
        0.3, ge=0.0, le=1.0,
        description="arithmetic: probability that an event adds another person's current count (how many "
        "quantities interact).",
    )
    # left out of the JSON when 0, so configs (and inputs hashes) of runs without a lexicon stay as they were
    lexicon: int = Field(
        0, ge=0, le=4096, exclude_if=lambda value: value == 0,
        description="arithmetic: made-up verbs that may phrase an add or give-away event (`Ann dakov 5 apples`), "
        "drawn by Zipf's law after the core phrasing, so most are rare and each is learnt from the examples "
        "that use it; 0: the core phrasings only.",
    )
    train_size: int = Field(10000, ge=1, le=10000000, description="Generated sources: training questions.")
    test_size: int = Field(500, ge=1, le=1000000, description="Generated sources: test questions.")
    validation_size: int = Field(
        0, ge=0, le=1000000,
        description="Generated sources: validation questions (for choosing hyperparameters and checkpoints).",
    )
    validation_path: str | None = Field(None, description="Validation split (JSONL) of a file source; optional.")
    seed: int = Field(0, description="Generated sources: generator seed (each split uses its own stream).")

    @model_validator(mode="after")
    def _files_for_file_sources(self):
        if self.kind not in GENERATED_SOURCES and not (self.train_path and self.test_path):
            raise ValueError(f"source kind {self.kind!r} needs trainPath and testPath")
        return self


class ScratchModelSpec(Strict):
    """A tiny Llama initialised from scratch (CPU examples, tests): no weights to download. Its
    tokenizer is made from the data: one token per word for `sequence` tasks, byte-level BPE otherwise."""

    hidden: int = Field(128, ge=64, le=4096, description="Hidden size; head size is hidden / heads (keep 64).")
    layers: int = Field(2, ge=1, le=64, description="Decoder layers.")
    heads: int = Field(2, ge=1, le=64, description="Attention heads.")
    vocab_size: int = Field(512, ge=64, le=65536, description="BPE vocabulary size (ignored for word tokens).")
    max_positions: int = Field(512, ge=16, le=32768, description="Longest sequence the model handles.")
    seed: int = Field(0, ge=0, description="Initialisation seed.")

    def model_shape(self) -> ScratchModelSpec:
        """The model alone, as the prepare stage builds it (a subclass's training family is a stage of its
        own: model.scratch.pretrain, teacher.served.scratch.training)."""
        return ScratchModelSpec.model_validate(self.model_dump(by_alias=False, include=set(ScratchModelSpec.model_fields)))


FAMILY_RANGE = ("{field} {knob} {value} exceeds data.source.{knob} {limit}: the vocabulary is the source's, so "
                "its words must lie within it; lower {path}.{knob} or unset it")


class PretrainDataSpec(Strict):
    """The pretraining family of the arithmetic task (its own hash bucket, disjoint from train,
    validation and test): `examples` distinct questions, the chain lengths in equal shares."""

    examples: int = Field(ge=1, le=10000000, description="Distinct pretraining questions.")
    chain_lengths: list[Annotated[int, Field(ge=1, le=12)]] = Field(
        min_length=1, max_length=12,
        description="Distinct chain lengths (events per problem, 1..12) mixed in equal shares (the first gets the "
        "remainder); usually other lengths than data.source.chainLength, so the base learns the language and "
        "the arithmetic but not the target family.",
    )
    quantities: int | None = Field(
        None, ge=1, le=6, description="People whose counts a pretraining problem tracks; unset: data.source's.",
    )
    interact: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Probability that an event adds another person's count; unset: data.source's.",
    )
    max_value: int | None = Field(
        None, ge=1, le=10000,
        description="Largest count in a pretraining problem, at most data.source.maxValue (the vocabulary stays "
        "the source's: the numbers above this one are then new to the base, and the task's data must teach "
        "them); unset: data.source's.",
    )
    lexicon: int | None = Field(
        None, ge=0, le=4096, exclude_if=lambda value: value is None,
        description="Made-up verbs a pretraining problem may use: the task's first ones (at most "
        "data.source.lexicon), or with ownVerbs as many of its own; 0: the core phrasings only; unset: "
        "data.source's.",
    )
    own_verbs: bool = Field(
        False, exclude_if=lambda value: not value,
        description="Draw the lexicon's verbs from the far end of the verb list, so none is a task verb: the "
        "base learns what a verb does (carry an operator) but not the task's verbs, which the task's data "
        "must teach.",
    )

    @model_validator(mode="after")
    def _distinct_chain_lengths(self):
        if len(set(self.chain_lengths)) != len(self.chain_lengths):
            raise ValueError(f"chainLengths must be distinct, got {self.chain_lengths}: list each length once")
        return self

    def shares(self) -> list[tuple[int, int]]:
        """(chain length, questions) in the order given: equal shares, the remainder to the first."""
        share, remainder = divmod(self.examples, len(self.chain_lengths))
        return [(length, share + (remainder if index == 0 else 0)) for index, length in enumerate(self.chain_lengths)]


class PrepareStageConfig(StageBase):
    """Materialises `<output_dir>/train.jsonl` and `<output_dir>/test.jsonl` as Question lines
    ({id, question, answer, solution}) from the source; the first `train_size` training questions only.
    With `pretrain` (arithmetic sources) also `<output_dir>/pretrain.jsonl`."""

    kind: Literal["prepare"] = "prepare"
    task: Task
    source: DataSourceSpec
    train_size: int | None = Field(None, ge=1, description="Keep only the first N training questions.")
    scratch_model: ScratchModelSpec | None = Field(
        None, description="Also build this from-scratch base model into <output_dir>/model."
    )
    scratch_seeds: list[int] = Field(
        default_factory=lambda: [0],
        description="One scratch model per experiment seed, initialised with scratchModel.seed + seed: "
        "<output_dir>/model for seed 0, <output_dir>/model-s<seed> for the others.",
    )
    prompt: PromptSpec = Field(default_factory=PromptSpec, description="Its words join a word-level vocabulary.")
    # left out of the JSON when unset, so configs (and inputs hashes) of runs without it stay as they were
    pretrain: PretrainDataSpec | None = Field(
        None, exclude_if=lambda value: value is None,
        description="Also write the pretraining family into <output_dir>/pretrain.jsonl (arithmetic only).",
    )
    teacher_model: ScratchModelSpec | None = Field(
        None, exclude_if=lambda value: value is None,
        description="Also build a scratch teacher into <output_dir>/teacher-model (the task's word tokenizer).",
    )
    teacher_data: PretrainDataSpec | None = Field(
        None, exclude_if=lambda value: value is None,
        description="Also write the scratch teacher's training family into <output_dir>/teacher.jsonl "
        "(arithmetic only; drawn apart from the pretraining family).",
    )

    @model_validator(mode="after")
    def _families_need_arithmetic(self):
        families = (("pretrain", "model.scratch.pretrain", self.pretrain),
                    ("teacherData", "teacher.served.scratch.training", self.teacher_data))
        for field, path, family in families:
            if family is None:
                continue
            if self.source.kind != "arithmetic":
                raise ValueError(f"{field} needs source kind arithmetic, got {self.source.kind!r}: drop {field} or "
                                 "use the arithmetic source")
            task_verbs = None if family.own_verbs else family.lexicon  # own verbs are never the source's
            for knob, value, limit in (("maxValue", family.max_value, self.source.max_value),
                                       ("lexicon", task_verbs, self.source.lexicon)):
                if (value or 0) > limit:
                    raise ValueError(FAMILY_RANGE.format(field=field, knob=knob, value=value, limit=limit, path=path))
        return self


StageConfig = Annotated[
    SampleStageConfig | CreditStageConfig | PairsStageConfig | EvaluateStageConfig | TrainStageConfig
    | PrepareStageConfig,
    Field(discriminator="kind"),
]


class _Envelope(Strict):
    config: StageConfig


def parse_stage_config(text: str) -> StageConfig:
    """Validate a stage config JSON document (any kind) into its typed model."""
    return _Envelope.model_validate({"config": json.loads(text)}).config


def read_input(path: str | Path) -> str:
    """A file's text, or standard input for `-` (every command that reads a file accepts it)."""
    return sys.stdin.read() if str(path) == "-" else Path(path).read_text()


def load_stage_config(path: str | Path, expected: type[StageBase]) -> StageBase:
    source = "<stdin>" if str(path) == "-" else str(path)
    try:
        config = parse_stage_config(read_input(path))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{source}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}; "
                          "fix the syntax") from None
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid stage config: {validation_problems(error, skip=1)}") from None
    if not isinstance(config, expected):
        raise ConfigError(f"{source}: stage config kind {config.kind!r} is not {expected.model_fields['kind'].default!r}")
    return config


def validation_problems(error: ValidationError, skip: int = 0) -> str:
    """`field.path: message` for each problem, the fields as spelled in the file."""
    return "; ".join(f"{'.'.join(str(part) for part in issue['loc'][skip:]) or '(document)'}: {issue['msg']}"
                     for issue in error.errors())


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard i/n` -> (i, n); also accepts JOB_COMPLETION_INDEX-style `i` with n given elsewhere."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count
