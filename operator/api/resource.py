"""Kubernetes resource requests and limits of one component (the samplers, the served teacher, the
workers, the trainers). Its own module so that spec modules the experiment imports (the teacher's)
can use it too."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from negrl_operator.api.stage_config import Strict
from negrl_operator.api.value_rule import QUANTITY

Quantity = Annotated[int | str, QUANTITY]  # a Kubernetes quantity: 4, "500m", "32Gi"


class ResourceSpec(Strict):
    requests: dict[str, Quantity] = Field(
        default_factory=dict, max_length=32, description="e.g. {cpu: 8, memory: 64Gi}."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, max_length=32, description="Limits; GPUs (nvidia.com/gpu) are set by the operator."
    )
