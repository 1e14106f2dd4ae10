"""Multi-node training that survives a lost rank, on real DeepSpeed (CPU, gloo) under real torchrun
agents launched as the operator launches them on several pods (c10d rendezvous hosted by node 0).
Node 1's pod (agent and worker) is killed after the first checkpoint; as the JobSet launcher does,
the whole group is then replaced: node 0's pod goes too and two new pods start with the same
command. They resume from the last checkpoint and end with the weights and the final loss of a run
that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.component.test_trainer import exported_weights, train_config
from tests.fixtures.deepspeed_cpu import free_port
from tests.fixtures.paths import REPO

PARAMS = {"zero_stage": 2, "max_steps": 8, "checkpoint_every_steps": 2, "micro_batch_size": 2}


def agent(config_path: Path, port: int, env: dict, log: Path | None = None) -> subprocess.Popen:
    """One pod's torchrun agent, with the arguments the operator renders (torchrun_command)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "--nnodes=2",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=lost-rank",
               "--max-restarts=2", "-m", "negrl_operator.cli", "train", "--config", str(config_path), "--no-progress"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=log.open("w") if log else subprocess.PIPE, text=True, start_new_session=True)


def test_lost_rank_rejoins_and_training_ends_where_an_uninterrupted_run_does(tiny_model_dir, deepspeed_cpu_env,
                                                                            tmp_path):
    env = {k: v for k, v in deepspeed_cpu_env.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"}}
    runs = {}
    for name in ("whole", "lost"):
        (tmp_path / name).mkdir()
        config = train_config("dpo", tiny_model_dir, tmp_path / name, **PARAMS)
        path = tmp_path / name / "stage.json"
        path.write_text(config.model_dump_json())
        runs[name] = (config, path)

    port = free_port()
    nodes = [agent(runs["whole"][1], port, env, tmp_path / f"whole{i}.log") for i in range(2)]
    for node in nodes:
        node.communicate(timeout=600)
    assert [node.returncode for node in nodes] == [0, 0], (tmp_path / "whole0.log").read_text()[-3000:]

    port = free_port()
    config, path = runs["lost"]
    node0, node1 = agent(path, port, env, tmp_path / "first0.log"), agent(path, port, env, tmp_path / "first1.log")
    checkpoints = Path(config.output_dir) / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("step-*/complete.json")):
        if node0.poll() is not None or node1.poll() is not None or time.monotonic() > deadline:
            for node in (node0, node1):
                node.kill()
            pytest.fail(f"no checkpoint before exit/timeout:\n{(tmp_path / 'first0.log').read_text()[-3000:]}")
        time.sleep(0.05)
    lost_at = time.monotonic()
    os.killpg(node1.pid, signal.SIGKILL)  # the lost pod: its agent and its worker
    node1.wait()
    os.killpg(node0.pid, signal.SIGKILL)  # JobSet's group restart: the other pods go too
    node0.wait()
    assert not (Path(config.output_dir) / "manifest.json").exists(), "the run finished before it could be killed"
    port = free_port()  # the new pods (same command; the new node 0 hosts a new rendezvous store)
    node0, node1 = agent(path, port, env, tmp_path / "node0.log"), agent(path, port, env, tmp_path / "node1.log")
    outputs = [node.communicate(timeout=600) for node in (node0, node1)]
    assert (node0.returncode, node1.returncode) == (0, 0), (tmp_path / "node0.log").read_text()[-3000:]
    lines = [line for out, _ in outputs for line in out.strip().splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1])
    assert summary["world_size"] == 2 and summary["steps"] == PARAMS["max_steps"], summary
    assert 2 <= summary["resumed_from_step"] < PARAMS["max_steps"], summary  # resumed, not restarted from 0
    print(f"lost rank -> restarted group finished the run: {time.monotonic() - lost_at:.1f}s")

    whole = [json.loads(line) for line in (Path(runs["whole"][0].output_dir) / "train_log.jsonl").read_text().splitlines()]
    lost = [json.loads(line) for line in (Path(config.output_dir) / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lost] == [row["step"] for row in whole] == list(range(1, PARAMS["max_steps"] + 1))
    assert lost[-1]["loss"] == pytest.approx(whole[-1]["loss"], rel=1e-4)  # the same final loss position
    for key, value in exported_weights(runs["whole"][0].output_dir).items():
        torch.testing.assert_close(exported_weights(config.output_dir)[key], value, rtol=1e-4, atol=1e-5, msg=key)
