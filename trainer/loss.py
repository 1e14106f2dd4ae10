"""The losses, as pure functions over logits, labels and log-probabilities.

Labels follow the Hugging Face convention: `labels[b, t]` is the token at position t, or IGNORE
where no loss is taken (prompt, padding). The model's logits at position t predict token t + 1,
so logits and labels are shifted by one here, and only here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the labels and the mask of scored tokens, both [B, T-1]."""
    logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE
    safe = targets.masked_fill(~mask, 0)
    picked = torch.gather(logits, 2, safe.unsqueeze(-1)).squeeze(-1)
    logps = picked - torch.logsumexp(logits, dim=-1)
    return logps * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's scored tokens and how many there are, both [B]."""
    logps, mask = token_logps(logits, labels)
    return logps.sum(-1), mask.sum(-1)


def nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token NLL over the batch and the number of scored tokens (a scalar each).

    Returning the sum lets the caller divide by the token count of the whole optimizer step, so
    accumulating micro-batches gives exactly the gradient of one large batch."""
    logps, mask = token_logps(logits, labels)
    return -logps.sum(), mask.sum()


@dataclass(frozen=True)
class DPOOutput:
    losses: torch.Tensor            # [B], with grad
    chosen_rewards: torch.Tensor    # [B], beta * (log pi - log ref) of the chosen side, detached
    rejected_rewards: torch.Tensor  # [B], same for the rejected side

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.chosen_rewards > self.rejected_rewards).float()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> DPOOutput:
    """Sigmoid DPO: -log sigmoid(beta * [(pi_w - ref_w) - (pi_l - ref_l)]) per pair.

    All inputs are summed response log-probabilities, shape [B]."""
    chosen_ratio = policy_chosen - reference_chosen
    rejected_ratio = policy_rejected - reference_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return DPOOutput(
        losses=losses,
        chosen_rewards=(beta * chosen_ratio).detach(),
        rejected_rewards=(beta * rejected_ratio).detach(),
    )


def chosen_nll(chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    """Mean per-token NLL of the chosen responses: the optional guard against DPO lowering both
    sides' likelihood."""
    return -chosen_logps.sum() / chosen_tokens.sum().clamp(min=1)
