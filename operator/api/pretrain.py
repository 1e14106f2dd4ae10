"""The shared pretrained base of a from-scratch model (spec.model.scratch.pretrain).

From scratch, an SFT curve measures how fast a circuit forms rather than what the data is worth. A
`pretrain` stage trains the seed-0 scratch model once per experiment on a disjoint family of the
arithmetic task (its `pretrain` hash bucket, with chain lengths of its own); every SFT (each seed,
each |D_syn| sweep point) and an RFT from the base start from that model. The data half
(`PretrainDataSpec`) is what the prepare stage needs; the training half is the pretrain stage's.
"""

from __future__ import annotations

from pydantic import Field

from negrl_operator.api.stage_config import PretrainDataSpec, ScratchModelSpec, TrainParams

PRETRAIN = "pretrain"  # the stage, and the policy it produces: <storage root>/pretrain/model


class PretrainSpec(PretrainDataSpec):
    """The pretraining family and how the shared base is trained on it."""

    params: TrainParams = Field(
        default_factory=TrainParams,
        description="Training hyperparameters of the pretrain stage (an SFT on pretrain.jsonl from the seed-0 "
        "scratch model).",
    )

    def data(self) -> PretrainDataSpec:
        """What the prepare stage needs: its training hyperparameters are not an input of the data."""
        return PretrainDataSpec.model_validate(self.model_dump(by_alias=False, exclude={"params"}))


class ScratchSpec(ScratchModelSpec):
    """A scratch model as the experiment spec describes it: optionally pretrained into a shared base."""

    pretrain: PretrainSpec | None = Field(
        None,
        description="Pretrain the scratch model once on a disjoint family of the arithmetic task (a `pretrain` "
        "stage after prepare); every SFT and an RFT from the base then start from <root>/pretrain/model, shared "
        "by all seeds. Needs data.source.kind arithmetic; maxValue is the source's (one vocabulary).",
    )
