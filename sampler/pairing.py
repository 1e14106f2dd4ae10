"""Training sets from graded samples and credit records (pure).

- RFT set: a question's correct samples, de-duplicated (whitespace-normalised text), at most m.
- Outcome pairs (baseline): a full correct response vs a full wrong one.
- Per-step pairs: a correct response vs the negative cut right after its first pit.

EOS rules (the trainer appends EOS to `chosen`; to `rejected` as `rejected_eos` says):

    text                              used when                           EOS in training
    RFT response / any chosen         correct and finished                yes
    outcome rejected                  wrong and finished                  yes
    outcome twin rejected, unfinished the full text of a same-negative twin   no (cut by max_tokens)
    per-step rejected, pit < L        steps[:pit] of any negative         no (it is a cut prefix)
    per-step rejected, pit = L        the whole finished negative         yes (every prefix recovers:
                                                                          the mistake is the stop)
    per-step, pit = L, unfinished     cut by max_tokens                   dropped (Q_L unknown), counted

"Finished" means the policy ended the text itself: finish_reason is not "length" (a text cut by
max_tokens must not be taught to end there). Chosen sources for per-step pairs:
`self` a finished correct sample of the question (round-robin over the de-duplicated ones),
`synthetic` the question's synthetic solution, `rollout` the pit's recovery: the prefix before the
pit plus a correct, finished rollout from it (recorded by the credit stage).

Same-negative pairs (`same_negative_pairs`, pairs.matchCounts): the per-step pairs as above, and for
each one an outcome twin with the same question, chosen text and negative, whose rejected side is
the negative's full text (EOS iff it finished; a negative cut by max_tokens whose pit came before
the cut keeps its twin, without EOS). The two sets differ only in the cut, so comparing outcome and
per-step DPO isolates it. Outcome pairs of `outcome_pairs` (unmatched) use every finished negative.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable

from negrl_sampler.record import CreditRecord, Demonstration, PreferencePair, Question, Sample


def normalized(text: str) -> str:
    return " ".join(text.split())


def finished(sample: Sample) -> bool:
    return sample.finish_reason != "length"


def by_question(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Samples grouped by question id, each group sorted by sample index; groups in id order."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.question_id].append(sample)
    return {qid: sorted(groups[qid], key=lambda s: s.sample_index) for qid in sorted(groups)}


def unique(samples: Iterable[Sample]) -> list[Sample]:
    """First sample of each distinct (whitespace-normalised) response, in order."""
    seen: set[str] = set()
    kept = []
    for sample in samples:
        key = normalized(sample.response)
        if key and key not in seen:
            seen.add(key)
            kept.append(sample)
    return kept


def positives(group: list[Sample]) -> list[Sample]:
    """De-duplicated correct, finished samples of one question."""
    return unique(s for s in group if s.grade.correct is True and finished(s))


def negatives(group: list[Sample]) -> list[Sample]:
    """Wrong or unparseable samples of one question, in index order (duplicates kept)."""
    return [s for s in group if s.grade.correct is not True]


def rft_set(samples: Iterable[Sample], per_question: int) -> list[Demonstration]:
    demos = []
    for group in by_question(samples).values():
        for sample in positives(group)[:per_question]:
            demos.append(Demonstration(question_id=sample.question_id, prompt=sample.prompt,
                                       response=sample.response, source="self"))
    return demos


def _rotation(items: list, seed: int, question_id: str) -> list:
    """`items` rotated by a deterministic, seed-dependent offset (spreads chosen responses)."""
    if not items:
        return items
    offset = random.Random(f"{seed}:{question_id}").randrange(len(items))
    return items[offset:] + items[:offset]


def outcome_pairs(samples: Iterable[Sample], per_question: int, seed: int = 0) -> list[PreferencePair]:
    """One pair per distinct finished negative (up to the cap), chosen round-robin from positives."""
    pairs = []
    for qid, group in by_question(samples).items():
        chosen = _rotation(positives(group), seed, qid)
        rejected = unique(s for s in negatives(group) if finished(s))
        for index, negative in enumerate(rejected[: per_question if chosen else 0]):
            pairs.append(PreferencePair(
                question_id=qid, kind="outcome", prompt=negative.prompt,
                chosen=chosen[index % len(chosen)].response, rejected=negative.response,
                chosen_source="self", rejected_sample_index=negative.sample_index, rejected_eos=True,
            ))
    return pairs


def chosen_for(record: CreditRecord, source: str, own: list[Sample], question: Question | None,
               index: int) -> str | None:
    """The chosen response of the index-th pair of a question, or None when the source has none."""
    if source == "self":
        return own[index % len(own)].response if own else None
    if source == "synthetic":
        return question.solution if question is not None and question.solution else None
    if record.recovery is None or record.pit is None:
        return None
    return "".join(record.steps[: record.pit - 1]) + record.recovery


def pit_at_end(record: CreditRecord) -> bool:
    """Every scanned prefix recovered: the pit is the last step (the negative's stop, or its cut)."""
    return record.pit is not None and record.pit == len(record.steps)


def unknown_end(record: CreditRecord) -> bool:
    """A pit-L negative cut by max_tokens: nothing says its end is wrong, so it makes no pair."""
    return pit_at_end(record) and not record.finished


def _usable(credits: Iterable[CreditRecord]) -> dict[str, list[CreditRecord]]:
    """Negatives whose pit can make a pair, by question (id order), each in sample-index order."""
    records: dict[str, list[CreditRecord]] = defaultdict(list)
    for record in credits:
        if record.pit is not None and not unknown_end(record):
            records[record.question_id].append(record)
    return {qid: sorted(records[qid], key=lambda r: r.sample_index) for qid in sorted(records)}


def _cut(record: CreditRecord) -> str:
    return "".join(record.steps[: record.pit])


def _selected(
    credits: Iterable[CreditRecord], samples: Iterable[Sample], questions: dict[str, Question],
    source: str, per_question: int, seed: int, full: dict[tuple[str, int], Sample] | None = None,
) -> list[tuple[CreditRecord, str]]:
    """(negative, chosen text) of each per-step pair, in order. A pair whose (chosen, cut) repeats an
    earlier pair of the question is skipped; with `full` (the negatives' samples) so is one whose
    (chosen, full text) repeats, so neither file of same-negative pairs holds a repeat."""
    groups = by_question(samples)
    selected = []
    for qid, records in _usable(credits).items():
        own = _rotation(positives(groups.get(qid, [])), seed, qid)
        seen: set[tuple[str, str, str]] = set()
        kept = 0
        for record in records:
            if kept >= per_question:
                break
            chosen = chosen_for(record, source, own, questions.get(qid), kept)
            keys = {("step", chosen or "", _cut(record))}
            if full is not None:
                keys.add(("outcome", chosen or "", full[(qid, record.sample_index)].response))
            if not chosen or not _cut(record).strip() or keys & seen:
                continue
            seen |= keys
            kept += 1
            selected.append((record, chosen))
    return selected


def _step_pair(record: CreditRecord, chosen: str, source: str) -> PreferencePair:
    return PreferencePair(
        question_id=record.question_id, kind="step", prompt=record.prompt, chosen=chosen, rejected=_cut(record),
        chosen_source=source, rejected_sample_index=record.sample_index, pit=record.pit,
        rejected_eos=pit_at_end(record), values=[value.value for value in record.values],
    )


def step_pairs(
    credits: Iterable[CreditRecord], samples: Iterable[Sample], questions: dict[str, Question],
    source: str, per_question: int, seed: int = 0,
) -> list[PreferencePair]:
    """Per-step pairs from negatives with a pit, in sample-index order, up to the cap per question.
    Pairs whose (chosen, rejected) repeat an earlier pair of the question are dropped, and so are
    `unknown_end` negatives (see the EOS table)."""
    return [_step_pair(record, chosen, source)
            for record, chosen in _selected(credits, samples, questions, source, per_question, seed)]


def same_negative_pairs(
    credits: Iterable[CreditRecord], samples: Iterable[Sample], questions: dict[str, Question],
    source: str, per_question: int, seed: int = 0,
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(per-step pairs, outcome pairs) from the same negatives: the i-th outcome pair has the i-th
    per-step pair's question, chosen text (and source) and negative, with the full text rejected."""
    credits, samples = list(credits), list(samples)
    full = {(s.question_id, s.sample_index): s for s in samples}
    for records in _usable(credits).values():
        for record in records:
            if (record.question_id, record.sample_index) not in full:
                raise ValueError(f"credit record (question {record.question_id!r}, sample {record.sample_index}) "
                                 "has no sample: the credit and samples folders come from different runs")
    selected = _selected(credits, samples, questions, source, per_question, seed, full)
    outcome = []
    for record, chosen in selected:
        negative = full[(record.question_id, record.sample_index)]
        outcome.append(PreferencePair(
            question_id=record.question_id, kind="outcome", prompt=negative.prompt, chosen=chosen,
            rejected=negative.response, chosen_source=source, rejected_sample_index=negative.sample_index,
            rejected_eos=finished(negative),
        ))
    return [_step_pair(record, chosen, source) for record, chosen in selected], outcome
