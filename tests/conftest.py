"""Test tiers follow the folder: tests/unit -> unit, tests/component -> component,
tests/cluster -> cluster,
tests/e2e -> e2e. Fixtures live in tests/fixtures/, one module per real component."""

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.tiny_model",
    "tests.fixtures.vllm_server",
    "tests.fixtures.deepspeed_cpu",
    "tests.fixtures.cluster",
    "tests.fixtures.node",
    "tests.fixtures.kueue",
]

TIERS = ("unit", "component", "cluster", "e2e")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
