"""Batches: collation, SFT sequence packing, and the data order (a pure function of seed and step).

The order never depends on what ran before: the indices of optimizer step s are computed from
(seed, s) alone, so a resumed run continues with exactly the batches an uninterrupted run sees.
Every step holds a full global batch (the last batch of an epoch wraps to the epoch's start), so
all ranks run the same number of micro-steps and every micro-batch has the same number of rows.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch

from negrl_trainer.data import Encoded, EncodedPair
from negrl_trainer.loss import IGNORE

# A training unit: one sequence (sft/rft), a packed row of sequences (sft with packing), or a pair.
Unit = Encoded | tuple[Encoded, ...] | EncodedPair


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor            # [rows, T]
    labels: torch.Tensor               # [rows, T], IGNORE where no loss is taken
    attention_mask: torch.Tensor | None  # None for packed rows: position_ids delimit the sequences
    position_ids: torch.Tensor | None
    tokens: int                        # real (non-padding) tokens

    def model_inputs(self, device) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids.to(device)}
        if self.attention_mask is not None:
            inputs["attention_mask"] = self.attention_mask.to(device)
        if self.position_ids is not None:
            inputs["position_ids"] = self.position_ids.to(device)
        return inputs


def pad_rows(rows: list[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """Right-pad (input_ids, labels) rows to the longest one."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, row_labels) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[row, : len(ids)] = torch.tensor(row_labels, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return Batch(input_ids, labels, attention, None, int(attention.sum()))


def collate(units: list[Unit], pad_id: int) -> Batch:
    """Sequences -> one padded batch; pairs -> chosen rows first, then rejected rows."""
    first = units[0]
    if isinstance(first, EncodedPair):
        sides = [pair.chosen for pair in units] + [pair.rejected for pair in units]
        return pad_rows([(list(s.input_ids), list(s.labels)) for s in sides], pad_id)
    if isinstance(first, tuple):
        return collate_packed(units, pad_id)
    return pad_rows([(list(s.input_ids), list(s.labels)) for s in units], pad_id)


def collate_packed(rows: list[tuple[Encoded, ...]], pad_id: int) -> Batch:
    """Packed rows: sequences laid end to end, positions restarting at each one, and no attention
    mask, so the model's packed-sequence mask keeps every sequence from seeing its neighbours.
    Padding forms one more (unscored) sequence at the end of a row."""
    width = max(sum(len(s.input_ids) for s in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for sequence in row:
            end = start + len(sequence.input_ids)
            input_ids[r, start:end] = torch.tensor(sequence.input_ids, dtype=torch.long)
            labels[r, start:end] = torch.tensor(sequence.labels, dtype=torch.long)
            labels[r, start] = IGNORE  # never predicted from the previous sequence's last token
            positions[r, start:end] = torch.arange(end - start)
            start = end
        positions[r, start:] = torch.arange(width - start)
    tokens = sum(len(s.input_ids) for row in rows for s in row)
    return Batch(input_ids, labels, None, positions, tokens)


def pack(lengths: list[int], max_length: int) -> list[list[int]]:
    """Best-fit-decreasing bins of sequence indices, each holding at most max_length tokens."""
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, bin id), sorted
    for index in order:
        length = lengths[index]
        if length > max_length:
            raise ValueError(f"sequence {index} has {length} tokens, more than max_length {max_length}")
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            bins.append([index])
            bisect.insort(free, (max_length - length, len(bins) - 1))
            continue
        room, bin_id = free.pop(slot)
        bins[bin_id].append(index)
        bisect.insort(free, (room - length, bin_id))
    return bins


def packed_units(sequences: list[Encoded], max_length: int) -> list[tuple[Encoded, ...]]:
    return [tuple(sequences[i] for i in group) for group in pack([len(s.input_ids) for s in sequences], max_length)]


@dataclass(frozen=True)
class Schedule:
    """How many units, rows per optimizer step (all ranks), and the resulting step counts: `epochs`
    passes, at least `min_steps` steps (a floor for small data), at most `max_steps`."""

    units: int
    global_batch: int
    epochs: float
    max_steps: int | None = None
    min_steps: int | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.units / self.global_batch)

    @property
    def total_steps(self) -> int:
        steps = max(1, self.min_steps or 1, math.ceil(self.epochs * self.steps_per_epoch))
        return min(steps, self.max_steps) if self.max_steps is not None else steps


def epoch_permutation(units: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(units, generator=generator).tolist()


def step_indices(schedule: Schedule, seed: int, step: int) -> list[int]:
    """Unit indices of optimizer step `step` (0-based), global_batch of them."""
    epoch, position = divmod(step, schedule.steps_per_epoch)
    order = epoch_permutation(schedule.units, seed, epoch)
    start = position * schedule.global_batch
    return [order[(start + k) % schedule.units] for k in range(schedule.global_batch)]


def rank_micro_batches(indices: list[int], rank: int, world_size: int, micro_batch: int) -> list[list[int]]:
    """This rank's share of a step's indices, split into micro-batches (rank-major)."""
    per_rank = len(indices) // world_size
    mine = indices[rank * per_rank: (rank + 1) * per_rank]
    return [mine[k: k + micro_batch] for k in range(0, per_rank, micro_batch)]
