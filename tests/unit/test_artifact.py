"""Artifacts are readable by pods running as another user (a sampler reading a trained model)."""

import os
import stat

import pytest

from negrl_operator.api.artifact import share_readable, write_json_atomic
from negrl_sampler.stages.pairs import write_jsonl_atomic

pytestmark = pytest.mark.unit


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_atomic_writes_are_world_readable(tmp_path, strict_umask):
    write_json_atomic(tmp_path / "stage" / "manifest.json", {"a": 1})
    write_jsonl_atomic(tmp_path / "stage" / "rft.jsonl", [{"b": 2}])
    assert mode(tmp_path / "stage" / "manifest.json") == 0o644
    assert mode(tmp_path / "stage" / "rft.jsonl") == 0o644


def test_a_written_model_folder_is_shared(tmp_path, strict_umask):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"x")
    (model / "sub" / "tokenizer.json").write_text("{}")
    assert mode(model / "model.safetensors") == 0o600 and mode(model) == 0o700
    share_readable(model)
    assert mode(model / "model.safetensors") == 0o644 and mode(model / "sub" / "tokenizer.json") == 0o644
    assert mode(model) == 0o755 and mode(model / "sub") == 0o755
