"""Losses: hand-computed DPO and NLL figures, ln 2 at step 0, no gradient through prompt tokens,
and accumulation of micro-batches equal to one batch."""

import math

import pytest
import torch

from negrl_trainer.batch import collate
from negrl_trainer.data import Encoded, EncodedPair
from negrl_trainer.loss import IGNORE, chosen_nll, dpo_loss, nll_sum, sequence_logps, token_logps
from negrl_trainer.objective import DPOSettings, dpo_loss_of, scored_tokens, sft_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(-x, 0.0)  # -log sigmoid(x)


# (policy chosen, policy rejected, ref chosen, ref rejected, beta) -> hand-computed figures
DPO_CASES = [
    # chosen ratio +0.5, rejected ratio -1.0: logit 0.1 * 1.5 = 0.15
    ((-1.0, -2.0, -1.5, -1.0, 0.1), {"loss": math.log1p(math.exp(-0.15)), "chosen": 0.05, "rejected": -0.1}),
    # policy prefers rejected: logit 0.5 * (-2 - 0) = -1
    ((-4.0, -2.0, -2.0, -2.0, 0.5), {"loss": math.log1p(math.exp(1.0)), "chosen": -1.0, "rejected": 0.0}),
    # large beta, large margin: loss ~ 0
    ((-1.0, -30.0, -1.0, -10.0, 1.0), {"loss": softplus(20.0), "chosen": 0.0, "rejected": -20.0}),
]


@pytest.mark.parametrize(("inputs", "expected"), DPO_CASES)
def test_dpo_loss_and_rewards_match_hand_computation(inputs, expected):
    *logps, beta = inputs
    out = dpo_loss(*(torch.tensor([value], dtype=torch.float64) for value in logps), beta)
    assert out.losses.item() == pytest.approx(expected["loss"], rel=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(expected["chosen"], abs=1e-12)
    assert out.rejected_rewards.item() == pytest.approx(expected["rejected"], abs=1e-12)
    assert out.margins.item() == pytest.approx(expected["chosen"] - expected["rejected"], abs=1e-12)
    assert out.accuracy.item() == float(expected["chosen"] > expected["rejected"])


def test_dpo_loss_is_exactly_ln2_when_policy_is_the_reference():
    torch.manual_seed(0)
    logits = torch.randn(4, 7, 11)
    labels = torch.randint(0, 11, (4, 7))
    labels[:, :3] = IGNORE
    logps, _ = sequence_logps(logits, labels)
    out = dpo_loss(logps[:2], logps[2:], logps[:2].clone(), logps[2:].clone(), beta=0.1)
    assert torch.equal(out.losses, torch.full((2,), math.log(2.0), dtype=torch.float32))
    assert torch.equal(out.chosen_rewards, torch.zeros(2)) and torch.equal(out.rejected_rewards, torch.zeros(2))


def test_token_logps_shift_and_mask_by_hand():
    # vocabulary of 3; the logits at position t predict the label at t + 1
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    labels = torch.tensor([[IGNORE, 0, 1]])
    logps, mask = token_logps(logits, labels)
    assert mask.tolist() == [[True, True]]
    assert logps[0, 0].item() == pytest.approx(math.log(1 / 3))
    assert logps[0, 1].item() == pytest.approx(-math.log(math.exp(2.0) + 2.0))  # token 1 under [2, 0, 0]
    total, count = nll_sum(logits, labels)
    assert count.item() == 2
    assert total.item() == pytest.approx(-(math.log(1 / 3) - math.log(math.exp(2.0) + 2.0)))


def test_chosen_nll_is_a_token_mean():
    assert chosen_nll(torch.tensor([-6.0, -2.0]), torch.tensor([3, 1])).item() == pytest.approx(2.0)


def _sequence(prompt: list[int], response: list[int]) -> Encoded:
    return Encoded(tuple(prompt + response), tuple([IGNORE] * len(prompt) + response))


def test_prompt_tokens_get_zero_gradient():
    sequence = _sequence([5, 6, 7, 8], [9, 3, 2])
    pair = EncodedPair(sequence, _sequence([5, 6, 7, 8], [4]))
    for batch, loss_of in [
        (collate([sequence], 0), lambda logits, labels: nll_sum(logits, labels)[0]),
        (collate([pair], 0), lambda logits, labels: dpo_loss(
            *sequence_logps(logits, labels)[0], torch.tensor(-3.0), torch.tensor(-2.0), 0.1).losses.sum()),
    ]:
        logits = torch.randn(*batch.input_ids.shape, 12, requires_grad=True)
        loss_of(logits, batch.labels).backward()
        # logits at t predict token t+1: positions 0..2 predict prompt tokens 1..3
        assert torch.count_nonzero(logits.grad[:, :3]) == 0
        assert torch.count_nonzero(logits.grad[0, 3:6]) > 0
        assert torch.count_nonzero(logits.grad[0, 6:]) == 0  # the last position predicts nothing


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).float()


def gradients(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_accumulating_two_micro_batches_of_one_equals_one_batch_of_two():
    sequences = [_sequence([1, 2, 3], [4, 5, 6, 7, 8]), _sequence([1, 9], [10, 11])]  # different lengths
    model = tiny_llama()
    whole = collate(sequences, 0)
    sft_loss(model, whole, step_tokens=scored_tokens(whole))[0].backward()
    expected = gradients(model)
    model.zero_grad()
    micro = [collate([s], 0) for s in sequences]
    step_tokens = sum(scored_tokens(b) for b in micro)
    for batch in micro:
        sft_loss(model, batch, step_tokens=step_tokens)[0].backward()
    for got, want in zip(gradients(model), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_dpo_accumulation_matches_one_batch():
    pairs = [EncodedPair(_sequence([1, 2], [3, 4, 5]), _sequence([1, 2], [6])),
             EncodedPair(_sequence([7, 8, 9], [10]), _sequence([7, 8, 9], [11, 12, 13, 14]))]
    reference = torch.tensor([[-9.0, -3.0], [-2.0, -11.0]])
    settings = DPOSettings(beta=0.5, nll_weight=0.0)
    model = tiny_llama(1)
    dpo_loss_of(model, collate(pairs, 0), reference, settings, step_pairs=2)[0].backward()
    expected = gradients(model)
    model.zero_grad()
    for index, pair in enumerate(pairs):
        dpo_loss_of(model, collate([pair], 0), reference[index: index + 1], settings, step_pairs=2)[0].backward()
    for got, want in zip(gradients(model), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
