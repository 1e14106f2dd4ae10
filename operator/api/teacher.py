"""The teacher that writes D_syn (spec.teacher) and the `synthesize` stage's config.

Two teacher kinds: an external OpenAI-compatible `endpoint` (its API key comes from a Secret on a
cluster, from an environment variable on `negrl run`; the stage config names only the variable,
never the key) or a model `served` by the operator like the policies. Two modes: `solutions`
(the teacher solves the training questions, the grader keeps the right ones) and `problems` (the
teacher writes new problems from seed examples and labels them by its majority answer).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from negrl_operator.api.pretrain import PretrainSpec
from negrl_operator.api.resource import ResourceSpec
from negrl_operator.api.secret_ref import SecretKeyRef
from negrl_operator.api.stage_config import ScratchModelSpec, ServerRef, StageBase, Strict, Task
from negrl_operator.api.value_rule import IMAGE

TeacherMode = Literal["solutions", "problems"]
DEFAULT_API_KEY_ENV = "NEGRL_TEACHER_API_KEY"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
TEACHER_POLICY = "teacher"  # the name a served teacher is served under (like a policy)
TEACHER_SFT = "teacher-sft"  # the stage that trains a scratch teacher: <storage root>/teacher-sft/model
Image = Annotated[str, Field(min_length=1, max_length=1024), IMAGE]
EXAMPLES, QUESTION = "{examples}", "{question}"
SHARED = "On a cluster the stage's worker.shards pods split it (each gets its share)."
# Variables the operator sets in every stage pod (manifest.py): the key's variable must not replace one.
STAGE_POD_ENV = ("HOME", "PATH", "HF_HOME", "HF_TOKEN", "JOB_COMPLETION_INDEX", "MLFLOW_TRACKING_TOKEN",
                 "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
ONE_TEACHER_MODEL = ("teacher.served needs exactly one of model (weights to load) and scratch (a teacher the "
                     "experiment trains on the arithmetic task)")
KEY_ENV_TAKEN = (f"apiKeyEnv must not be a variable the stage pods already have ({', '.join(STAGE_POD_ENV)}): "
                 f"choose another name, e.g. {DEFAULT_API_KEY_ENV}")


class EndpointParams(Strict):
    """What the stage needs to call an endpoint: everything but the key, which it reads from `apiKeyEnv`."""

    base_url: str = Field(
        pattern=r"^https?://", max_length=2048,
        description="Base URL of the OpenAI-compatible API, ending in /v1 (e.g. https://api.example.com/v1).",
    )
    model: str = Field(min_length=1, max_length=1024, description="Model name sent in every request.")
    api_key_env: str = Field(
        DEFAULT_API_KEY_ENV, pattern=ENV_NAME, max_length=253,
        description="Environment variable the stage reads the API key from (sent as `Authorization: Bearer`). "
        "On a cluster the operator sets it from apiKeySecret; `negrl run` passes its own environment, so export "
        "it there. Unset or empty: no Authorization header.",
    )
    requests_per_second: float | None = Field(
        None, gt=0, le=10000, description="At most this many requests start per second (unset: no rate limit). "
        f"{SHARED}",
    )
    max_concurrency: int = Field(8, ge=1, le=4096, description=f"Requests in flight at once. {SHARED}")
    max_retries: int = Field(
        6, ge=0, le=20,
        description="Retries of one request on timeouts, connection errors, 429 and 5xx, with exponential "
        "back-off (a 429's or 503's Retry-After, in seconds or as an HTTP date, is honoured).",
    )
    timeout_s: float = Field(300.0, gt=0, le=3600, description="Per-request timeout, seconds.")
    max_requests: int | None = Field(
        None, ge=1, description="Hard cap on requests sent (retries included): the stage stops with an error "
        f"naming the cap once it is reached, keeping what it wrote (unset: no cap). {SHARED}",
    )
    max_tokens_total: int | None = Field(
        None, ge=1, description="Hard cap on tokens (prompt + generated, from the answers' usage): no request "
        f"starts once it is reached; the stage stops with an error naming the cap (unset: no cap). {SHARED}",
    )

    def share(self, pods: int) -> EndpointParams:
        """One of `pods` synthesize pods' part of the stage's limits: the rate divided, the requests in
        flight and the caps divided rounding down (at least 1), so the pods together stay within them."""
        if pods == 1:
            return self

        def part(total: int | None) -> int | None:
            return None if total is None else max(1, total // pods)

        rate = self.requests_per_second / pods if self.requests_per_second is not None else None
        return self.model_copy(update={
            "requests_per_second": rate, "max_concurrency": part(self.max_concurrency),
            "max_requests": part(self.max_requests), "max_tokens_total": part(self.max_tokens_total),
        })


class TeacherEndpointSpec(EndpointParams):
    api_key_secret: SecretKeyRef | None = Field(
        None, description="Secret holding the API key (in the experiment's namespace); on a cluster it is set as "
        "the environment variable apiKeyEnv of the synthesize pods (valueFrom secretKeyRef: the operator never "
        "reads it, and it is never written into a config, a log, an Event or the status). Unset: no key.",
    )

    @model_validator(mode="after")
    def _key_env_is_free(self):
        if self.api_key_env in STAGE_POD_ENV:
            raise ValueError(KEY_ENV_TAKEN)
        return self

    def params(self) -> EndpointParams:
        """The part the stage config carries: no Secret reference, only the variable's name."""
        return EndpointParams.model_validate(self.model_dump(include=set(EndpointParams.model_fields)))


class TeacherScratchSpec(ScratchModelSpec):
    """A teacher the experiment trains itself, the CPU stand-in for a capable model: a scratch model
    (usually larger than the student) that a `teacher-sft` stage trains on plenty of the arithmetic
    task, from the `pretrain` hash bucket (disjoint from train, validation and test)."""

    training: PretrainSpec = Field(
        description="The teacher's training family (questions, chain lengths and knobs, drawn apart from the "
        "student's pretraining family) and its training hyperparameters.",
    )


class TeacherServedSpec(Strict):
    """A teacher served with vLLM like the policies, as its own Deployment (`<experiment>-teacher`)
    with its own size and placement (spec.scheduling.teacher); it exists only while the synthesize
    stage runs. Unset fields fall back to spec.sampler's."""

    model: str | None = Field(
        None, min_length=1, max_length=1024,
        description="Teacher weights: a Hugging Face id or a path on the storage volume (on `negrl run`: a local "
        "folder). A gated Hugging Face model reads its token from model.tokenSecret (HF_TOKEN). Set this or "
        "scratch.",
    )
    scratch: TeacherScratchSpec | None = Field(
        None,
        description="Train the teacher within the experiment instead (arithmetic source only): a `teacher-sft` "
        "stage after prepare, whose model the synthesize stage serves. Set this or model.",
    )
    image: Image | None = Field(None, description="vLLM OpenAI server image of the teacher; unset: sampler.image.")
    replicas: int = Field(1, ge=1, le=64, description="vLLM replicas of the teacher.")
    tensor_parallel: int = Field(
        1, ge=1, le=16, description="--tensor-parallel-size; also the GPUs (nvidia.com/gpu) per replica."
    )
    gpus: int | None = Field(
        None, ge=0, le=16, description="GPUs of the teacher's replica; unset: tensorParallel. 0: vLLM's CPU build.",
    )
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="--gpu-memory-utilization of the teacher; unset: sampler.gpuMemoryUtilization."
    )
    max_model_len: int = Field(4096, ge=64, le=1048576, description="--max-model-len of the teacher.")
    max_concurrency: int = Field(64, ge=1, le=4096, description="Requests in flight at once (per synthesize pod).")
    startup_timeout_s: int | None = Field(
        None, ge=60, le=86400, description="Time allowed to load the teacher; unset: sampler.startupTimeoutS.",
    )
    resources: ResourceSpec = Field(
        default_factory=ResourceSpec, description="CPU and memory of each teacher replica (GPUs come from gpus).",
    )
    extra_args: list[str] = Field(
        default_factory=list, max_length=64,
        description="More `vllm serve` arguments of the teacher, appended as given (sampler.extraArgs do not apply).",
    )

    def model_len(self) -> int:
        """--max-model-len: a scratch teacher's own position limit caps maxModelLen."""
        return min(self.max_model_len, self.scratch.max_positions) if self.scratch else self.max_model_len

    @model_validator(mode="after")
    def _one_model(self):
        if (self.model is None) == (self.scratch is None):
            raise ValueError(ONE_TEACHER_MODEL)
        return self


class FewShotExample(Strict):
    question: str = Field(min_length=1, max_length=65536, description="An example problem.")
    solution: str = Field(
        min_length=1, max_length=65536,
        description="Its step-by-step solution, ending in the final answer the task's grader reads "
        "(gsm8k: `#### N`; math: \\boxed{...}).",
    )


DEFAULT_SOLUTION_TEMPLATE = "{examples}Question: {question}\nAnswer:"
DEFAULT_PROBLEM_TEMPLATE = "{examples}Question:"
DEFAULT_EXAMPLE_FORMAT = "Question: {question}\nAnswer: {solution}\n\n"


class SynthesisParams(Strict):
    mode: TeacherMode = Field(
        "solutions", description="`solutions`: solve the training questions, keep graded-correct solutions; "
        "`problems`: write new problems from the examples, solve each K times, label by majority answer.",
    )
    examples: list[FewShotExample] = Field(
        default_factory=list, max_length=64,
        description="Few-shot examples: shown in every prompt; in `problems` mode also the seed problems "
        "(each new problem's prompt lists them in an order rotated per problem).",
    )
    example_format: str = Field(
        DEFAULT_EXAMPLE_FORMAT, min_length=1, max_length=8192,
        description="How one example is written into {examples}; `{question}` and `{solution}` are replaced.",
    )
    solution_template: str = Field(
        DEFAULT_SOLUTION_TEMPLATE, min_length=1, max_length=65536,
        description="Prompt asking for a solution: `{examples}` (the rendered examples) and `{question}`.",
    )
    problem_template: str = Field(
        DEFAULT_PROBLEM_TEMPLATE, min_length=1, max_length=65536,
        description="`problems` mode: prompt asking for a new problem, with `{examples}`; the first paragraph "
        "of the answer (cut at a blank line or an `Answer:` line) is the problem.",
    )
    solutions_per_question: int = Field(4, ge=1, le=1024, description="K: teacher solutions per question.")
    keep_per_question: int = Field(
        1, ge=1, le=1024, description="m: correct (or agreeing), de-duplicated solutions kept per question."
    )
    problems: int | None = Field(
        None, ge=1, le=10000000,
        description="`problems` mode: new problems to write (before checks); unset: twice what the largest "
        "|D_syn| sweep point needs (data.syntheticSize x the largest sweep multiplier).",
    )
    agreement: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="`problems` mode: a problem is kept only when more than this fraction of its K solutions "
        "give the majority answer.",
    )
    ngram: int = Field(8, ge=1, le=64, description="Decontamination: word n-gram size.")
    overlap: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="Decontamination: a new problem is dropped when more than this fraction of its word n-grams "
        "occur in one test or validation question.",
    )
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature of the teacher.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass of the teacher.")
    max_tokens: int = Field(512, ge=1, le=32768, description="Max new tokens per solution.")
    problem_max_tokens: int = Field(256, ge=1, le=32768, description="`problems` mode: max new tokens per problem.")
    stop: list[str] = Field(default_factory=list, max_length=16, description="Stop strings of the solutions.")
    seed: int = Field(0, ge=0, description="Base seed; each request derives its own from it.")

    @model_validator(mode="after")
    def _placeholders(self):
        if QUESTION not in self.solution_template:
            raise ValueError("solutionTemplate must contain {question} where the question goes, "
                             "e.g. '{examples}Question: {question}\\nAnswer:'")
        if self.mode == "problems" and not self.examples:
            raise ValueError("mode problems needs examples: the seed problems the teacher imitates")
        if self.mode == "problems" and EXAMPLES not in self.problem_template:
            raise ValueError("problemTemplate must contain {examples} (the seed problems), e.g. '{examples}Question:'")
        return self


class TeacherSpec(Strict):
    """spec.teacher: when set, a `synthesize` stage writes D_syn before SFT; SFT, sampling and pairs read it."""

    endpoint: TeacherEndpointSpec | None = Field(None, description="An external OpenAI-compatible endpoint.")
    served: TeacherServedSpec | None = Field(None, description="A teacher model served by the operator (vLLM).")
    synthesis: SynthesisParams = Field(default_factory=SynthesisParams, description="What the teacher writes.")

    @model_validator(mode="after")
    def _one_teacher(self):
        if (self.endpoint is None) == (self.served is None):
            raise ValueError("teacher needs exactly one of endpoint (an OpenAI-compatible API) and served (a model "
                             "the operator serves)")
        return self


class SynthesizeStageConfig(StageBase):
    """Writes `<output_dir>/train.jsonl` (D_syn: {id, question, answer, solution}) once every shard is done."""

    kind: Literal["synthesize"] = "synthesize"
    task: Task
    questions: str = Field(description="`solutions` mode: the training questions ({id, question, answer}).")
    max_questions: int | None = Field(None, ge=1, description="`solutions` mode: use only the first N questions.")
    heldout: list[str] = Field(
        default_factory=list, description="Test and validation questions files new problems must not overlap."
    )
    problems: int = Field(1, ge=1, description="`problems` mode: new problems to write.")
    endpoint: EndpointParams | None = Field(None, description="The external teacher (or `server`).")
    server: ServerRef | None = Field(None, description="The served teacher (or `endpoint`).")
    params: SynthesisParams = Field(default_factory=SynthesisParams)
    # left out of the JSON when unset, so configs (and inputs hashes) of other sources stay as they were
    check_lines: bool = Field(
        False, exclude_if=lambda value: not value,
        description="`solutions` mode: also re-run every line with the arithmetic task's checker and accept only "
        "solutions whose every line is right (the source kind arithmetic sets it).",
    )
    fail_if_empty: bool = Field(
        False, exclude_if=lambda value: not value,
        description="Fail instead of writing an empty D_syn (set when SFT or sampling reads it).",
    )

    @model_validator(mode="after")
    def _one_teacher(self):
        if (self.endpoint is None) == (self.server is None):
            raise ValueError("set exactly one of endpoint and server (the teacher to call)")
        return self
