"""bench/leader.py's arithmetic: leaderless gaps between replicas, overlaps, children made twice."""

import importlib.util
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("leader_bench", Path(__file__).parents[2] / "bench" / "leader.py")
leader = sys.modules["leader_bench"] = importlib.util.module_from_spec(SPEC)  # dataclasses look the module up
SPEC.loader.exec_module(leader)


def test_each_change_of_replica_is_a_handoff_measured_from_the_old_ones_last_reconcile():
    reconciles = [(10.0, "a#0"), (11.0, "a#0"), (12.0, "a#0"), (14.5, "b#0"), (15.5, "b#0"), (17.0, "c#0"),
                  (22.0, "c#1")]  # c's container restarted: a new replica
    changes, overlaps = leader.handoffs(list(reversed(reconciles)))  # order of arrival does not matter
    assert changes == [("a#0", "b#0", 14.5, 2.5), ("b#0", "c#0", 17.0, 1.5), ("c#0", "c#1", 22.0, 5.0)]
    assert overlaps == 0


def test_a_replaced_replica_that_reconciles_again_is_an_overlap_not_a_handoff():
    changes, overlaps = leader.handoffs([(1.0, "a"), (2.0, "b"), (2.5, "a"), (3.0, "b"), (3.2, "a")])
    assert changes == [("a", "b", 2.0, 1.0)]
    assert overlaps == 2


def test_no_reconcile_no_handoff():
    assert leader.handoffs([]) == ([], 0)
    assert leader.handoffs([(1.0, "a"), (2.0, "a")]) == ([], 0)


def test_children_made_twice():
    seen = {
        ("Job", "x-prepare", "u1", "worker", "prepare"),
        ("Job", "x-sft", "u2", "trainer", "sft"),
        ("Job", "x-sft", "u3", "trainer", "sft"),  # recreated under its name
        ("Job", "x-sft-2", "u4", "trainer", "sft"),  # a second Job for the same stage
        ("ConfigMap", "x-sft", "u5", "trainer", "sft"),  # a ConfigMap beside its Job: not a duplicate
        ("Service", "x-a", "u6", "sampler", ""),
        ("Service", "x-b", "u7", "sampler", ""),  # two Services of one component: by name only
    }
    assert leader.duplicates(seen) == ["Job/x-sft recreated", "Job trainer/sft: ['x-sft', 'x-sft-2']"]
    assert leader.duplicates(set()) == []
