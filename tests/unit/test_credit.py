"""Credit assignment against a scripted policy: known pits, hand-counted rollouts and tokens."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from negrl_sampler.credit import least_advantage_step, question_value, round_sizes, search_pit, step_value
from negrl_sampler.simulated_policy import ScriptedNegative

T, F = True, False


def search(strategy, negative, k=5, estimate="best_of_k", q0=None, rounds="single"):
    return asyncio.run(search_pit(strategy, negative.num_steps, negative.rollout, k=k, estimate=estimate,
                                  question_value=q0, rounds=rounds))


@pytest.mark.parametrize(("k", "stop", "rounds", "sizes"), [
    (5, True, "single", [1, 1, 1, 1, 1]), (5, False, "single", [5]), (5, True, "doubling", [1, 2, 2]),
    (5, False, "doubling", [5]), (1, True, "doubling", [1]), (8, True, "doubling", [1, 2, 4, 1]),
    (7, True, "doubling", [1, 2, 4]),
])
def test_round_sizes(k, stop, rounds, sizes):
    assert round_sizes(k, stop, rounds) == sizes
    assert sum(sizes) == k


@pytest.mark.parametrize(("successes", "rollouts", "estimate", "value"), [
    (0, 5, "best_of_k", 0.0), (1, 5, "best_of_k", 1.0), (5, 5, "best_of_k", 1.0),
    (0, 5, "soft", 0.0), (1, 5, "soft", 1 - 0.8**5), (5, 5, "soft", 1.0), (0, 0, "soft", 0.0),
    (0, 5, "mean", 0.0), (1, 5, "mean", 0.2), (4, 5, "mean", 0.8), (5, 5, "mean", 1.0), (0, 0, "mean", 0.0),
])
def test_step_value(successes, rollouts, estimate, value):
    assert step_value(successes, rollouts, 5, estimate) == pytest.approx(value)


# Five steps; rows are prefixes 1..4, columns completions 0..4 of that prefix.
TABLE = [
    [T, F, F, F, F],  # prefix 1 recovers on its first completion
    [F, F, T, F, F],  # prefix 2 on its third
    [F, F, F, F, F],  # prefix 3: the first pit
    [F, T, F, F, F],  # prefix 4 recovers again (non-monotone)
]
STEP_TOKENS = [10, 20, 30, 40, 50]  # a rollout after i steps generates sum(STEP_TOKENS[i:])


def table_negative(table=TABLE, tokens=STEP_TOKENS):
    return ScriptedNegative(values=[0.5] * (len(tokens) - 1), step_tokens=list(tokens), table=table)


def test_full_scans_every_prefix_with_k_rollouts():
    negative = table_negative()
    result = search("full", negative)
    assert result.pit == 3
    assert result.rollouts == 4 * 5
    assert result.tokens == 5 * (140 + 120 + 90 + 50)
    assert [(v.step, v.successes, v.rollouts, v.value) for v in result.values] == [
        (1, 1, 5, 1.0), (2, 1, 5, 1.0), (3, 0, 5, 0.0), (4, 1, 5, 1.0)]
    assert sorted(negative.calls) == [(1, 0, 5), (2, 0, 5), (3, 0, 5), (4, 0, 5)]


def test_early_stop_stops_at_first_success_and_first_pit():
    negative = table_negative()
    result = search("early_stop", negative)
    # prefix 1: draw 0 succeeds; prefix 2: draws 0, 1 fail, 2 succeeds; prefix 3: all five fail.
    assert negative.calls == [(1, 0, 1), (2, 0, 1), (2, 1, 1), (2, 2, 1)] + [(3, j, 1) for j in range(5)]
    assert result.pit == 3
    assert result.rollouts == 1 + 3 + 5
    assert result.tokens == 1 * 140 + 3 * 120 + 5 * 90
    assert [(v.step, v.successes, v.rollouts) for v in result.values] == [(1, 1, 1), (2, 1, 3), (3, 0, 5)]


def test_doubling_rounds_batch_the_later_draws():
    negative = table_negative()
    result = search("early_stop", negative, rounds="doubling")
    # prefix 2: [1] fails, [2] holds the success; prefix 3: 1 + 2 + 2 fail.
    assert negative.calls == [(1, 0, 1), (2, 0, 1), (2, 1, 2), (3, 0, 1), (3, 1, 2), (3, 3, 2)]
    assert (result.pit, result.rollouts) == (3, 1 + 3 + 5)
    with pytest.raises(ValueError, match="unknown rollout rounds"):
        search("early_stop", table_negative(), rounds="triple")


def test_bisect_halves_between_a_recovering_and_a_failing_prefix():
    negative = table_negative()
    result = search("bisect", negative)
    # lo=0, hi=5 -> prefix 2 recovers (3 rollouts) -> lo=2; prefix 3 fails (5) -> hi=3.
    assert negative.calls == [(2, 0, 1), (2, 1, 1), (2, 2, 1)] + [(3, j, 1) for j in range(5)]
    assert result.pit == 3
    assert result.rollouts == 8
    assert result.tokens == 3 * 120 + 5 * 90


def test_bisect_misses_an_early_pit_when_values_are_not_monotone():
    table = [[F] * 5, [T] * 5, [T] * 5, [T] * 5]  # prefix 1 scores 0, later prefixes recover
    assert search("full", table_negative(table)).pit == 1
    assert search("early_stop", table_negative(table)).pit == 1
    negative = table_negative(table)
    result = search("bisect", negative)
    assert result.pit == 5  # probes prefixes 2, 3, 4: all recover
    assert [call[0] for call in negative.calls] == [2, 3, 4]


@pytest.mark.parametrize(("values", "pit", "full", "early", "bisect"), [
    # certain outcomes (probabilities 0/1): rollouts counted by hand
    ([1, 1, 1, 0, 0], 4, 25, 3 + 5, 1 + 5),            # L=6: bisect probes 3 (ok), 4 (pit)
    ([0, 0, 0], 1, 15, 5, 5 + 5),                      # L=4: bisect probes 2, 1
    ([1, 1, 1], 4, 15, 3, 1 + 1),                      # no zero: the pit is the last step
    ([1, 0, 0, 0, 0, 0, 0, 0, 0], 2, 45, 1 + 5, 5 + 5 + 1),  # L=10: bisect probes 5, 2 (pits), 1 (ok)
])
def test_known_pits_and_rollout_counts(values, pit, full, early, bisect):
    tokens = [7] * (len(values) + 1)
    for strategy, expected in (("full", full), ("early_stop", early), ("bisect", bisect)):
        negative = ScriptedNegative(values=values, step_tokens=tokens)
        result = search(strategy, negative)
        assert negative.true_pit() == pit
        assert (strategy, result.pit, result.rollouts) == (strategy, pit, expected)
        assert result.tokens == sum(count * negative.tokens_after(step) for step, _, count in negative.calls)


def test_soft_estimate_spends_all_k_on_every_prefix_and_keeps_fractions():
    for strategy in ("full", "early_stop", "bisect"):
        result = search(strategy, table_negative(), estimate="soft")
        # Q = 1 (5 of 5 from the question), .672, .672, 0, .672, 0: advantages -.328, 0, -.672, +.672, -.672
        assert result.pit == 3
        assert result.rollouts == 25
        assert [(v.step, v.successes) for v in result.values] == [(0, 5), (1, 1), (2, 1), (3, 0), (4, 1)]
        assert [v.value for v in result.values] == pytest.approx([1.0, 1 - 0.8**5, 1 - 0.8**5, 0.0, 1 - 0.8**5])


def test_soft_pit_is_the_step_of_least_advantage_not_the_first_zero():
    # prefix 1: 1/5 (.672), prefix 2: 0/5 (first zero), prefix 3: 5/5 (1.0), prefix 4: 0/5; Q_5 = 0.
    # Advantages from Q_0 = 1: -.328, -.672, +1, -1, 0: the deepest drop is step 4.
    table = [[T, F, F, F, F], [F] * 5, [T] * 5, [F] * 5]
    for strategy in ("full", "early_stop", "bisect"):
        result = search(strategy, table_negative(table), estimate="soft")
        assert result.pit == 4
        assert result.recovery == "<rollout 3.0>"
    assert search("early_stop", table_negative(table)).pit == 2  # best_of_k: the first zero


def test_mean_keeps_the_size_of_a_drop_that_soft_flattens():
    # A prefix past the mistake the policy still solves 1 time in 5 (prefix 2): mean scores it 0.2, soft
    # .672. Q_0 = 1, then mean .8, .2, 0, 0 (advantages -.2, -.6, -.2, 0, 0): step 2; soft .99968, .672, 0,
    # 0 (advantages -.0003, -.328, -.672, 0, 0): step 3, where best_of_k's first zero lies too.
    table = [[T, T, T, T, F], [F, F, T, F, F], [F] * 5, [F] * 5]
    for strategy in ("full", "early_stop", "bisect"):
        result = search(strategy, table_negative(table), estimate="mean")
        assert (result.pit, result.rollouts) == (2, 25)
        assert [v.value for v in result.values] == pytest.approx([1.0, 0.8, 0.2, 0.0, 0.0])
        assert search(strategy, table_negative(table), estimate="soft").pit == 3
    assert search("early_stop", table_negative(table)).pit == 3


def test_least_advantage_rolls_out_the_question_under_the_rollout_policy():
    # The samples found 1 of 4 right (Q_0 .25, maybe at another temperature); the rollouts solve the bare
    # question 5 of 5. Prefixes: .2, .2, 0, 0. From the rollouts' Q_0 = 1 the deepest drop is step 1
    # (-.8); from the samples' .25 it would have been step 3 (-.2).
    table = [[T, F, F, F, F], [F, T, F, F, F], [F] * 5, [F] * 5]
    samples = question_value(1, 4, 5, "mean")
    result = search("full", table_negative(table), estimate="mean", q0=samples)
    assert result.pit == 1
    assert (result.values[0].step, result.values[0].successes, result.values[0].rollouts) == (0, 5, 5)
    # the samples still skip a question nobody solved; rollouts that never solve it end the search
    assert search("full", table_negative(table), estimate="mean", q0=question_value(0, 4, 5, "mean")).rollouts == 0
    unsolved = ScriptedNegative(values=[0.5] * 4, step_tokens=STEP_TOKENS, table=table, question=0.0)
    result = search("full", unsolved, estimate="mean", q0=samples)
    assert (result.pit, result.rollouts, [v.step for v in result.values]) == (None, 5, [0])


def test_unknown_estimate_is_refused():
    with pytest.raises(ValueError, match="unknown value estimate 'median'"):
        search("full", table_negative(), estimate="median")


@pytest.mark.parametrize(("values", "pit"), [
    ([1.0, 0.0], 1), ([1.0, 1.0, 0.0], 2), ([1.0, 0.5, 0.5, 0.0], 1),  # tie: the first
    ([1.0, 0.9, 0.1, 0.0], 2), ([0.6, 0.9, 0.0, 1.0, 0.0], 4), ([1.0, 1.0, 1.0, 0.0], 3),
])
def test_least_advantage_step(values, pit):
    assert least_advantage_step(values) == pit


def test_unsolvable_question_has_no_pit_and_costs_nothing():
    negative = table_negative()
    for strategy in ("full", "early_stop", "bisect"):
        result = search(strategy, negative, q0=question_value(0, 4, 5, "best_of_k"))
        assert (result.pit, result.rollouts, result.tokens) == (None, 0, 0)
        assert [v.step for v in result.values] == [0]
    assert negative.calls == []
    solvable = search("early_stop", table_negative(), q0=question_value(1, 4, 5, "best_of_k"))
    assert [v.step for v in solvable.values] == [0, 1, 2, 3]
    assert solvable.values[0].value == 1.0


def test_one_step_response_pits_at_its_only_step_without_rollouts():
    negative = ScriptedNegative(values=[], step_tokens=[30])
    for strategy in ("full", "early_stop", "bisect"):
        result = search(strategy, negative)
        assert (result.pit, result.rollouts) == (1, 0)
    assert asyncio.run(search_pit("full", 0, negative.rollout)).pit is None


def test_recovery_is_a_correct_completion_of_the_prefix_before_the_pit():
    result = search("early_stop", table_negative())
    assert result.recovery == "<rollout 2.2>"
    assert search("full", table_negative()).recovery == "<rollout 2.2>"
    assert search("bisect", table_negative()).recovery == "<rollout 2.2>"


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="unknown pit-search strategy"):
        search("greedy", table_negative())


probabilities = st.lists(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]), min_size=0, max_size=11)


@settings(max_examples=150, deadline=None)
@given(values=probabilities, seed=st.integers(0, 10_000), k=st.integers(1, 6))
def test_early_stop_finds_the_full_scan_pit_with_fewer_rollouts(values, seed, k):
    tokens = [5] * (len(values) + 1)
    full = search("full", ScriptedNegative(values, tokens, seed), k=k)
    early = search("early_stop", ScriptedNegative(values, tokens, seed), k=k)
    assert early.pit == full.pit
    assert early.rollouts <= full.rollouts and early.tokens <= full.tokens


@settings(max_examples=150, deadline=None)
@given(values=probabilities, seed=st.integers(0, 10_000), k=st.integers(1, 6))
def test_bisect_agrees_with_full_when_measured_values_are_monotone(values, seed, k):
    tokens = [5] * (len(values) + 1)
    full = search("full", ScriptedNegative(values, tokens, seed), k=k)
    zeros = [v.successes == 0 for v in full.values]
    monotone = all(zeros[i + 1] for i in range(len(zeros) - 1) if zeros[i])
    bisect = search("bisect", ScriptedNegative(values, tokens, seed), k=k)
    if monotone:
        assert bisect.pit == full.pit
    assert 1 <= bisect.pit <= len(tokens)
