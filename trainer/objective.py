"""One micro-batch's loss for each stage: a model forward plus the pure losses of loss.py.

`scale` makes accumulation exact. DeepSpeed divides each micro-batch's loss by the number of
accumulation steps and averages gradients over ranks, so each micro-batch's objective is its share
of the whole optimizer step, multiplied back by (accumulation steps x world size):
- SFT: summed token NLL / tokens scored in the whole step (all micro-batches, all ranks);
- DPO: summed pair losses / pairs in the whole step (every micro-batch has the same pair count).
Two micro-batches of one row then give the gradient of one batch of two rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from negrl_trainer.batch import Batch
from negrl_trainer.loss import IGNORE, chosen_nll, dpo_loss, nll_sum, sequence_logps


@dataclass
class StepStats:
    """Sums over the micro-batches of one optimizer step on this rank (reduced over ranks later)."""

    loss: float = 0.0          # the step's objective, each micro-batch's share added up
    tokens: int = 0            # real tokens fed to the model
    values: dict[str, float] = field(default_factory=dict)  # summed per-pair figures (DPO)
    grad_norm: float | None = None

    def add(self, loss: float, tokens: int, values: dict[str, float] | None = None) -> None:
        self.loss += loss
        self.tokens += tokens
        for key, value in (values or {}).items():
            self.values[key] = self.values.get(key, 0.0) + value


def logits_of(model, batch: Batch, device) -> torch.Tensor:
    return model(**batch.model_inputs(device), use_cache=False).logits


def sft_loss(model, batch: Batch, *, step_tokens: int, device="cpu") -> tuple[torch.Tensor, dict]:
    """The micro-batch's share of the step's token-mean NLL (step_tokens: scored tokens in the step)."""
    logits = logits_of(model, batch, device)
    total, _ = nll_sum(logits, batch.labels.to(device))
    return total / step_tokens, {}


def scored_tokens(batch: Batch) -> int:
    return int((batch.labels[:, 1:] != IGNORE).sum())


@dataclass(frozen=True)
class DPOSettings:
    beta: float
    nll_weight: float = 0.0


def dpo_loss_of(model, batch: Batch, reference: torch.Tensor, settings: DPOSettings, *, step_pairs: int,
                device="cpu") -> tuple[torch.Tensor, dict]:
    """The micro-batch's share of the step's mean DPO loss (+ nll_weight x chosen NLL).

    `batch` holds the chosen rows, then the rejected rows; reference is [pairs, 2] (chosen,
    rejected) summed log-probs of the reference model."""
    pairs = batch.input_ids.shape[0] // 2
    logits = logits_of(model, batch, device)
    logps, counts = sequence_logps(logits, batch.labels.to(device))
    reference = reference.to(logps.device, logps.dtype)
    out = dpo_loss(logps[:pairs], logps[pairs:], reference[:, 0], reference[:, 1], settings.beta)
    loss = out.losses.sum() / step_pairs
    nll = chosen_nll(logps[:pairs], counts[:pairs])
    if settings.nll_weight:
        loss = loss + settings.nll_weight * nll * pairs / step_pairs
    values = {
        "pairs": float(pairs),
        "chosen_reward": float(out.chosen_rewards.sum()),
        "rejected_reward": float(out.rejected_rewards.sum()),
        "accuracy": float(out.accuracy.sum()),
        "chosen_nll": float(nll.detach()) * pairs,
        "chosen_logp": float(logps[:pairs].detach().sum()),  # policy log-probs: both falling is collapse
        "rejected_logp": float(logps[pairs:].detach().sum()),
    }
    return loss, values
