"""Which containerd image refs the test node drops before importing a new build of an image."""

from __future__ import annotations

import pytest

from tests.fixtures.node import stale_refs

NEW = "localhost/negrl-worker:new"
REFS = [
    ("localhost/negrl-worker:old", "sha256:aaa"),
    ("sha256:1d0c", "sha256:aaa"),  # the kubelet's CRI names the same image by its id
    ("localhost/negrl-worker@sha256:aaa", "sha256:aaa"),  # and by its repo digest
    ("localhost/negrl-operator:old", "sha256:bbb"),  # another target: kept
    ("sha256:2e0f", "sha256:bbb"),
    ("localhost/negrl-pause:k", "sha256:ccc"),
    ("sha256:77aa", "sha256:eee"),  # the CRI's name of a build whose own name went earlier: dropped
]


@pytest.mark.parametrize(("image", "refs", "dropped"), [
    (NEW, REFS, ["localhost/negrl-worker:old", "localhost/negrl-worker@sha256:aaa", "sha256:1d0c", "sha256:77aa"]),
    (NEW, [(NEW, "sha256:ddd"), ("sha256:9f", "sha256:ddd")], []),  # the current build and its alias stay
    ("localhost/negrl-sampler-cpu:k", REFS[3:6], []),  # nothing of that repository yet
    (NEW, [], []),
])
def test_stale_refs(image, refs, dropped):
    assert stale_refs(image, refs) == dropped
