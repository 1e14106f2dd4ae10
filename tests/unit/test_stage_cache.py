"""The stage cache of `negrl run` (operator/local/stage_cache.py): what its key depends on, and that an
entry is restored whole, under this run's inputs hash, or not at all."""

from __future__ import annotations

import json

import pytest

from negrl_operator.api.artifact import MANIFEST, inputs_hash
from negrl_operator.local.stage_cache import cache_dir, cache_key, file_digests, restore, store
from negrl_operator.reconcile.graph import stage_config
from tests.unit.test_pretrain import node_named, pretrained

pytestmark = pytest.mark.unit

DIGESTS = [("0/model.safetensors", "ab" * 32), ("1", "cd" * 32)]


def pretrain_config(root: str, **changes):
    spec = pretrained(**changes)
    return stage_config(spec, node_named(spec, "pretrain"), root, None, experiment="exp", metrics_port=9000)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEGRL_CACHE_DIR", str(tmp_path / "cache"))


def test_the_key_ignores_where_the_run_lives_and_what_is_not_an_input():
    here, there = pretrain_config("/runs/a/artifacts"), pretrain_config("/home/u/b/artifacts")
    assert here.model_path == "/runs/a/artifacts/prepare/model"  # the root is in the config
    assert cache_key(here, "/runs/a/artifacts", DIGESTS) == cache_key(there, "/home/u/b/artifacts", DIGESTS)
    other_port = here.model_copy(update={"metrics_port": 9100, "experiment": "renamed"})
    assert cache_key(other_port, "/runs/a/artifacts", DIGESTS) == cache_key(here, "/runs/a/artifacts", DIGESTS)


@pytest.mark.parametrize("change", [
    pytest.param("digest", id="a-file-it-reads-changed"),
    pytest.param("file-name", id="a-file-it-reads-renamed"),
    pytest.param("learning-rate", id="a-hyperparameter-changed"),
])
def test_the_key_changes_with_every_input(change):
    config, digests = pretrain_config("/r"), list(DIGESTS)
    if change == "digest":
        digests[1] = ("1", "ce" * 32)
    elif change == "file-name":
        digests[0] = ("0/model2.safetensors", digests[0][1])
    else:
        config = config.model_copy(update={"params": config.params.model_copy(update={"learning_rate": 0.002})})
    assert cache_key(config, "/r", digests) != cache_key(pretrain_config("/r"), "/r", DIGESTS)


def test_file_digests_cover_every_file_in_order_and_skip_bytecode(tmp_path):
    code = tmp_path / "code"
    (code / "sub" / "__pycache__").mkdir(parents=True)
    (code / "b.py").write_text("B")
    (code / "sub" / "a.py").write_text("A")
    (code / "sub" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    digests = file_digests([code, data])
    assert [name for name, _ in digests] == ["0/b.py", "0/sub/a.py", "1"]
    assert digests[0][1] == "df7e70e5021544f4834bbee64a9e3789febc4be81470df629cad6ddb03320a5c"  # sha256("B")
    data.write_text("{}\n{}\n")
    assert file_digests([code, data])[2] != digests[2]


def finished_stage(folder, weights: bytes = b"weights"):
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.safetensors").write_bytes(weights)
    (folder / MANIFEST).write_text(json.dumps({"inputs_hash": "from-the-first-run", "stage": "sft"}))
    return folder


def test_a_stored_stage_is_restored_whole_under_this_runs_inputs_hash(tmp_path):
    first = finished_stage(tmp_path / "a" / "artifacts" / "pretrain")
    entry = store("k1", first, {"final_loss": 0.25, "steps": 30})
    assert entry == cache_dir() / "k1" and sorted(p.name for p in cache_dir().iterdir()) == ["k1"]

    stage = tmp_path / "b" / "artifacts" / "pretrain"
    (stage / "checkpoint-half-done").mkdir(parents=True)  # an interrupted run of the stage: replaced whole
    config = pretrain_config(str(tmp_path / "b" / "artifacts"))
    assert restore("k1", stage, config) == {"final_loss": 0.25, "steps": 30}
    assert sorted(p.name for p in stage.iterdir()) == ["manifest.json", "model"]
    assert (stage / "model" / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((stage / MANIFEST).read_text()) == {"inputs_hash": inputs_hash(config), "stage": "sft"}
    assert not list(stage.parent.glob(".pretrain.*"))  # no copy in progress left behind


def test_a_miss_restores_nothing(tmp_path):
    stage = tmp_path / "artifacts" / "pretrain"
    assert restore("absent", stage, pretrain_config(str(tmp_path / "artifacts"))) is None
    assert not stage.exists()
    (cache_dir() / "unfinished" / "stage").mkdir(parents=True)  # no manifest: never a complete entry
    assert restore("unfinished", stage, pretrain_config(str(tmp_path / "artifacts"))) is None


def test_a_second_store_of_the_same_key_keeps_the_first(tmp_path):
    store("k1", finished_stage(tmp_path / "one", b"first"), {"steps": 1})
    store("k1", finished_stage(tmp_path / "two", b"second"), {"steps": 2})
    assert (cache_dir() / "k1" / "stage" / "model" / "model.safetensors").read_bytes() == b"first"
    assert json.loads((cache_dir() / "k1" / "summary.json").read_text()) == {"steps": 1}
    assert sorted(p.name for p in cache_dir().iterdir()) == ["k1"]
