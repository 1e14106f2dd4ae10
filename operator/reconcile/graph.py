"""The stage graph of an experiment and each stage's config: shared by the operator and `negrl run`.

    prepare [-> pretrain] [-> synthesize] -> sft -> sample -> rft-data (pairs: rft, outcome) -> rft, outcome-dpo
                             -> credit -> step-pairs (pairs: step) -> step-dpo
            -> eval-<policy> for every policy (sft, rft, outcome-dpo, step-dpo, sft-x<k>)

A policy is named after the training stage that produces it; its weights are
`<storage_root>/<policy>/model`. With SFT disabled the base model is the policy `base`. With several
seeds every node but `prepare` (and `base`'s) gets `-s<seed>`. With spec.teacher a `synthesize`
stage writes D_syn (`synthesize/train.jsonl`), which SFT, sampling and the pairs read instead of
prepare's training split; a served teacher is served like a policy, named `teacher`. With
model.scratch.pretrain one `pretrain` stage (shared by all seeds) trains the seed-0 scratch model on
`prepare/pretrain.jsonl`, and its model is the base: every SFT and what else starts from the base
waits for it. Pure functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from negrl_operator.api.experiment import STORAGE_REQUIRED, ExperimentSpec, scratch_teacher
from negrl_operator.api.pretrain import PRETRAIN
from negrl_operator.api.stage_config import (
    PAIR_FILES,
    PREPARED_PRETRAIN,
    PREPARED_TEACHER,
    PREPARED_TEST,
    PREPARED_TRAIN,
    PREPARED_VALIDATION,
    TEACHER_MODEL_FOLDER,
    CreditStageConfig,
    EvaluateStageConfig,
    PairsStageConfig,
    PrepareStageConfig,
    SampleStageConfig,
    SelectionConfig,
    ServerRef,
    StageBase,
    TrainParams,
    TrainStageConfig,
)
from negrl_operator.api.teacher import TEACHER_POLICY, TEACHER_SFT, SynthesizeStageConfig

NodeKind = Literal["prepare", "synthesize", "train", "sample", "credit", "pairs", "evaluate"]
BASE_POLICY = "base"
PREPARE = "prepare"
SYNTHESIZE = "synthesize"


@dataclass(frozen=True)
class StageNode:
    name: str
    kind: NodeKind
    role: str  # prepare, pretrain, sft, sample, rft-data, credit, step-pairs, rft, outcome-dpo, step-dpo, eval
    needs: tuple[str, ...] = ()
    serves: str | None = None  # the policy a sampler must serve while this stage runs
    produces: str | None = None  # the policy this training stage writes
    seed: int = 0
    multiplier: int = 1  # SFT sweep: trains on multiplier * |D_syn| questions


def stage_graph(spec: ExperimentSpec) -> list[StageNode]:
    """Every stage the spec asks for, dependencies first."""
    nodes = [StageNode(PREPARE, "prepare", "prepare")]
    if pretraining(spec):  # one base for every seed and sweep point
        nodes.append(StageNode(PRETRAIN, "train", "pretrain", (PREPARE,), produces=PRETRAIN))
    if spec.teacher is not None:  # one D_syn for every seed: the teacher's data is the experiment's input
        serves = TEACHER_POLICY if spec.teacher.served is not None else None
        needs = (PREPARE,)
        if scratch_teacher(spec) is not None:  # the experiment trains its own teacher first
            nodes.append(StageNode(TEACHER_SFT, "train", TEACHER_SFT, (PREPARE,), produces=TEACHER_SFT))
            needs = (PREPARE, TEACHER_SFT)
        nodes.append(StageNode(SYNTHESIZE, "synthesize", "synthesize", needs, serves=serves))
    for seed in spec.seeds:
        for node in _seed_chain(spec, seed, len(spec.seeds) > 1):
            if all(node.name != other.name for other in nodes):
                nodes.append(node)
    return nodes


def _seed_chain(spec: ExperimentSpec, seed: int, suffixed: bool) -> list[StageNode]:
    def named(base: str) -> str:
        return f"{base}-s{seed}" if suffixed else base

    stages, nodes, data, base = spec.stages, [], training_source(spec), base_needs(spec)
    sft = named("sft") if stages.sft.enabled else BASE_POLICY
    sft_needs = (sft,) if stages.sft.enabled else base
    policies = [sft]
    if stages.sft.enabled:
        nodes.append(StageNode(sft, "train", "sft", (data, *base), produces=sft, seed=seed))
    if stages.sampling.enabled:
        nodes += _sampling_chain(spec, seed, named, sft, sft_needs)
        policies += [node.produces for node in nodes if node.produces and node.role != "sft"]
    if stages.sft.enabled:  # after the methods: a local run reaches its methods' results first
        for factor in spec.sweep.sft_multipliers:
            name = named(f"sft-x{factor}")
            nodes.append(StageNode(name, "train", "sft", (data, *base), produces=name, seed=seed, multiplier=factor))
            policies.append(name)
    if stages.eval.enabled:
        nodes += [
            StageNode(f"eval-{policy}", "evaluate", "eval", (PREPARE, *(base if policy == BASE_POLICY else (policy,))),
                      serves=policy, seed=seed)
            for policy in policies
        ]
        if stages.sft.enabled and stages.eval.train_questions:  # memorisation: pi_sft on its own questions
            nodes.append(StageNode(f"eval-train-{sft}", "evaluate", "eval-train", (PREPARE, sft), serves=sft, seed=seed))
    return nodes


def _sampling_chain(spec: ExperimentSpec, seed: int, named, sft: str, sft_needs: tuple[str, ...]) -> list[StageNode]:
    stages = spec.stages
    sample = named("sample")
    nodes = [StageNode(sample, "sample", "sample", (training_source(spec), *sft_needs), serves=sft, seed=seed)]
    matched = matched_pairs(spec)
    if stages.rft.enabled or (stages.outcome_dpo.enabled and not matched):
        data = named("rft-data")
        nodes.append(StageNode(data, "pairs", "rft-data", (sample,), seed=seed))
        if stages.rft.enabled:
            init_needs = sft_needs if stages.rft.init == "sft" else base_needs(spec)
            nodes.append(StageNode(named("rft"), "train", "rft", (data, *init_needs), produces=named("rft"), seed=seed))
    outcome = []
    if stages.outcome_dpo.enabled:
        name, data = named("outcome-dpo"), named("step-pairs" if matched else "rft-data")
        outcome = [StageNode(name, "train", "outcome-dpo", (data, *sft_needs), produces=name, seed=seed)]
    if not matched:
        nodes += outcome
    if stages.credit.enabled:
        credit = named("credit")
        nodes.append(StageNode(credit, "credit", "credit", (sample,), serves=sft, seed=seed))
        if stages.step_dpo.enabled:
            pairs, name = named("step-pairs"), named("step-dpo")
            nodes.append(StageNode(pairs, "pairs", "step-pairs", (credit,), seed=seed))
            nodes += outcome if matched else []
            nodes.append(StageNode(name, "train", "step-dpo", (pairs, *sft_needs), produces=name, seed=seed))
    return nodes


def training_source(spec: ExperimentSpec) -> str:
    """The stage whose `train.jsonl` is D_syn: the teacher's when there is one, else prepare's."""
    return SYNTHESIZE if spec.teacher is not None else PREPARE


def pretraining(spec: ExperimentSpec) -> bool:
    """The base is the shared pretrained model (model.scratch.pretrain), not the scratch model itself."""
    return spec.model.scratch is not None and spec.model.scratch.pretrain is not None


def base_needs(spec: ExperimentSpec) -> tuple[str, ...]:
    """What a stage that starts from (or serves) the base model waits for."""
    return (PRETRAIN,) if pretraining(spec) else ()


def matched_pairs(spec: ExperimentSpec) -> bool:
    """Outcome and per-step DPO pairs are built together, with equal counts (pairs.matchCounts)."""
    stages = spec.stages
    both = stages.outcome_dpo.enabled and stages.step_dpo.enabled and stages.credit.enabled
    return both and spec.stages.pairs.match_counts


def runnable(nodes: list[StageNode], done: set[str]) -> list[StageNode]:
    """Stages not done whose dependencies all are (running ones included)."""
    return [node for node in nodes if node.name not in done and all(need in done for need in node.needs)]


def policies_to_serve(nodes: list[StageNode], done: set[str]) -> list[str]:
    """Policies some runnable stage samples from: each needs a server now; no other does."""
    return sorted({node.serves for node in runnable(nodes, done) if node.serves})


def sibling(node: StageNode, role: str) -> str:
    """The stage with `role` in `node`'s seed chain (`base` stands in for a disabled SFT)."""
    return role + node.name[len(node.role):]


def sft_policy(node: StageNode, spec: ExperimentSpec) -> str:
    return sibling(node, "sft") if spec.stages.sft.enabled else BASE_POLICY


def stage_dir(storage_root: str, name: str) -> str:
    return f"{storage_root.rstrip('/')}/{name}"


def base_model(spec: ExperimentSpec, storage_root: str, seed: int = 0) -> str:
    """The base model: `model.name`, the pretrain stage's model (shared by every seed), or the
    from-scratch model the prepare stage builds for `seed`."""
    if not spec.model.scratch:
        return spec.model.name
    if pretraining(spec):
        return f"{stage_dir(storage_root, PRETRAIN)}/model"
    return scratch_model(storage_root, seed)


def scratch_model(storage_root: str, seed: int) -> str:
    """The from-scratch model the prepare stage builds for `seed` (seeds are independent down to the
    initialisation: `model` for seed 0, `model-s<seed>` else)."""
    return f"{stage_dir(storage_root, PREPARE)}/{scratch_model_folder(seed)}"


def scratch_model_folder(seed: int) -> str:
    return "model" if seed == 0 else f"model-s{seed}"


def policy_model(spec: ExperimentSpec, policy: str, storage_root: str) -> str:
    """Weights of a policy: the base model for `base`, the served teacher's for `teacher`, else its
    training stage's `model` folder."""
    if policy == TEACHER_POLICY and scratch_teacher(spec) is not None:
        return f"{stage_dir(storage_root, TEACHER_SFT)}/model"
    if policy == TEACHER_POLICY and spec.teacher is not None and spec.teacher.served is not None:
        return spec.teacher.served.model
    return base_model(spec, storage_root) if policy == BASE_POLICY else f"{stage_dir(storage_root, policy)}/model"


def storage_root(spec: ExperimentSpec, namespace: str, experiment: str, uid: str = "") -> str:
    """`<mountPath>/<path>/<namespace>/<experiment>/<uid>`: the artifact folder of this experiment
    object. The uid keeps a deleted and re-created experiment of the same name from reusing the
    outputs of the old one (`negrl run` passes none: its work dir is its identity)."""
    if spec.storage is None:  # the CRD's admission rule keeps such an object out of a cluster
        raise ValueError(STORAGE_REQUIRED)
    rest = [part for part in (spec.storage.path.strip("/"), namespace, experiment, uid) if part]
    return "/".join([spec.storage.mount_path.rstrip("/"), *rest])


def stage_config(
    spec: ExperimentSpec, node: StageNode, storage_root: str, server: ServerRef | None = None,
    experiment: str = "local", metrics_port: int = 0,
) -> StageBase:
    """The JSON config of one stage (validated by the stage command with the same class)."""
    common = {"experiment": experiment, "output_dir": stage_dir(storage_root, node.name), "metrics_port": metrics_port,
              "tracking": spec.tracking.params()}
    builder = {
        "prepare": _prepare_config, "synthesize": _synthesize_config, "train": _train_config, "sample": _sample_config,
        "credit": _credit_config, "pairs": _pairs_config, "evaluate": _evaluate_config,
    }[node.kind]
    if node.serves and server is None:
        raise ValueError(f"stage {node.name} samples policy {node.serves}: pass the server serving it")
    return builder(spec, node, storage_root, server, common)


def _seeded(params, seed: int):
    return params.model_copy(update={"seed": params.seed + seed})


def _questions(storage_root: str, split: str = PREPARED_TRAIN) -> str:
    return f"{stage_dir(storage_root, PREPARE)}/{split}"


def _train_questions(spec: ExperimentSpec, root: str) -> str:
    """D_syn: what SFT, sampling and the pairs read."""
    return f"{stage_dir(root, training_source(spec))}/{PREPARED_TRAIN}"


def _largest_point(spec: ExperimentSpec) -> int | None:
    """Questions the largest |D_syn| sweep point trains on (None: all of them)."""
    factor = max([1, *spec.sweep.sft_multipliers])
    return spec.data.synthetic_size * factor if spec.data.synthetic_size else None


def _synthesize_config(spec, node, root, server, common) -> SynthesizeStageConfig:
    teacher, source = spec.teacher, spec.data.source
    heldout = [_questions(root, PREPARED_TEST)]
    if source.validation_size > 0 or source.validation_path:
        heldout.append(_questions(root, PREPARED_VALIDATION))
    params = teacher.synthesis
    problems = params.problems or 2 * (_largest_point(spec) or source.train_size)
    # the rate, concurrency and caps are the whole stage's: each shard gets its share
    endpoint = teacher.endpoint.params().share(spec.worker.shards) if teacher.endpoint is not None else None
    return SynthesizeStageConfig(
        **common, task=spec.data.task, questions=_questions(root), heldout=heldout, problems=problems,
        endpoint=endpoint, server=server if endpoint is None else None, params=params,
        shard_count=spec.worker.shards, check_lines=source.kind == "arithmetic",
        fail_if_empty=spec.stages.sft.enabled or spec.stages.sampling.enabled,
    )


def _prepare_config(spec, node, root, server, common) -> PrepareStageConfig:
    scratch = spec.model.scratch
    pretrain = scratch.pretrain if scratch is not None else None
    teacher = scratch_teacher(spec)
    # with a pretrained base only the seed-0 scratch model is trained on: the seeds share the base
    return PrepareStageConfig(**common, task=spec.data.task, source=spec.data.source, train_size=_largest_point(spec),
                              scratch_model=scratch.model_shape() if scratch is not None else None,
                              scratch_seeds=[0] if pretrain is not None else list(spec.seeds), prompt=spec.data.prompt,
                              pretrain=pretrain.data() if pretrain is not None else None,
                              teacher_model=teacher.model_shape() if teacher is not None else None,
                              teacher_data=teacher.training.data() if teacher is not None else None)


def _sampled_questions(spec: ExperimentSpec) -> int | None:
    limits = [n for n in (spec.data.synthetic_size, spec.stages.sampling.max_questions) if n is not None]
    return min(limits) if limits else None


def _sample_config(spec, node, root, server, common) -> SampleStageConfig:
    params = _seeded(spec.stages.sampling.params, node.seed)
    return SampleStageConfig(
        **common, server=server, task=spec.data.task, questions=_train_questions(spec, root),
        shard_count=spec.worker.shards,
        max_questions=_sampled_questions(spec), prompt=spec.data.prompt, params=params,
    )


def _credit_config(spec, node, root, server, common) -> CreditStageConfig:
    params = _seeded(spec.stages.credit.params, node.seed)
    if params.temperature is None:  # roll out with the policy that produced the negatives
        params = params.model_copy(update={"temperature": spec.stages.sampling.params.temperature})
    return CreditStageConfig(
        **common, server=server, task=spec.data.task, samples_dir=stage_dir(root, node.needs[0]),
        shard_count=spec.worker.shards, prompt=spec.data.prompt, params=params,
    )


def _pairs_config(spec, node, root, server, common) -> PairsStageConfig:
    params = _seeded(spec.stages.pairs, node.seed)
    if node.role == "step-pairs":
        credit, sample = sibling(node, "credit"), sibling(node, "sample")
        return PairsStageConfig(
            **common, outputs=["step", "outcome"] if matched_pairs(spec) else ["step"], samples_dir=stage_dir(root, sample), credit_dir=stage_dir(root, credit),
            questions=_train_questions(spec, root), params=params,
        )
    outcome = spec.stages.outcome_dpo.enabled and not matched_pairs(spec)
    outputs = [out for out, on in (("rft", spec.stages.rft.enabled), ("outcome", outcome)) if on]
    return PairsStageConfig(
        **common, outputs=outputs, samples_dir=stage_dir(root, node.needs[0]), questions=_train_questions(spec, root),
        params=params,
    )


def _evaluate_config(spec, node, root, server, common) -> EvaluateStageConfig:
    block = spec.stages.eval
    if node.role == "eval-train":
        split, limit = PREPARED_TRAIN, min(block.train_questions, spec.data.synthetic_size or block.train_questions)
    else:
        split = PREPARED_VALIDATION if block.split == "validation" else PREPARED_TEST
        limit = block.max_questions
    return EvaluateStageConfig(
        **common, server=server, task=spec.data.task, policy=node.serves, questions=_questions(root, split),
        max_questions=limit, prompt=spec.data.prompt, params=_seeded(block.params, node.seed),
    )


def _train_params(spec: ExperimentSpec, params: TrainParams, seed: int) -> TrainParams:
    """A stage's own zeroStage and precision win over spec.trainer's (TrainStageConfig fills the defaults)."""
    update = {"seed": params.seed + seed}
    if params.zero_stage is None:
        update["zero_stage"] = spec.trainer.zero_stage
    if params.precision is None:
        update["precision"] = spec.trainer.precision
    return params.model_copy(update=update)


def _train_config(spec, node, root, server, common) -> TrainStageConfig:
    stages, sft = spec.stages, sft_policy(node, spec)
    if node.role == "pretrain":
        return TrainStageConfig(
            **common, stage="sft", model_path=scratch_model(root, 0), data=[_questions(root, PREPARED_PRETRAIN)],
            prompt=spec.data.prompt, params=_train_params(spec, spec.model.scratch.pretrain.params, node.seed),
        )
    if node.role == TEACHER_SFT:
        return TrainStageConfig(
            **common, stage="sft", model_path=f"{stage_dir(root, PREPARE)}/{TEACHER_MODEL_FOLDER}",
            data=[_questions(root, PREPARED_TEACHER)], prompt=spec.data.prompt,
            params=_train_params(spec, scratch_teacher(spec).training.params, node.seed),
        )
    if node.role == "sft":
        synthetic = spec.data.synthetic_size
        return TrainStageConfig(
            **common, stage="sft", model_path=base_model(spec, root, node.seed), data=[_train_questions(spec, root)],
            prompt=spec.data.prompt, max_examples=synthetic * node.multiplier if synthetic else None,
            params=_train_params(spec, stages.sft.params, node.seed), selection=_selection(spec, stages.sft, root),
        )
    if node.role == "rft":
        init = base_model(spec, root, node.seed) if stages.rft.init == "base" else policy_model(spec, sft, root)
        return TrainStageConfig(
            **common, stage="rft", model_path=init, data=[f"{stage_dir(root, node.needs[0])}/{PAIR_FILES['rft']}"],
            prompt=spec.data.prompt, params=_train_params(spec, stages.rft.params, node.seed),
            selection=_selection(spec, stages.rft, root),
        )
    block, output = (stages.step_dpo, "step") if node.role == "step-dpo" else (stages.outcome_dpo, "outcome")
    reference = policy_model(spec, sft, root)
    return TrainStageConfig(
        **common, stage="dpo", model_path=reference, reference_path=reference,
        data=[f"{stage_dir(root, node.needs[0])}/{PAIR_FILES[output]}"], prompt=spec.data.prompt,
        params=_train_params(spec, block.params, node.seed), selection=_selection(spec, block, root),
    )


def _selection(spec: ExperimentSpec, block, root: str) -> SelectionConfig | None:
    """The stage's checkpoint selection on the validation split, when its `select` is set."""
    if block.select is None:
        return None
    return SelectionConfig(**block.select.model_dump(), questions=_questions(root, PREPARED_VALIDATION),
                           task=spec.data.task)
