"""Multi-node training that survives a lost rank, on real DeepSpeed (CPU, gloo) under real torchrun
agents launched as the operator launches them on several pods (c10d rendezvous hosted by node 0,
--max-restarts). Node 1's pod (agent and worker) is killed after the first checkpoint, then the
whole group is replaced (what JobSet does, and the operator for a plain Job: node 0's pod goes too,
two new pods start). Training resumes from the last checkpoint and ends with the weights and the
final loss of a run that was never interrupted."""

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
from tests.fixtures.deepspeed_cpu import free_port, single_process_env
from tests.fixtures.paths import REPO

PARAMS = {"zero_stage": 2, "max_steps": 8, "checkpoint_every_steps": 2, "micro_batch_size": 2}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in sessions of their own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_pod(process: subprocess.Popen) -> None:
    """What deleting a pod does: every process of the container dies, the agent's workers included."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def agent(config_path: Path, port: int, env: dict, log: Path | None = None, host: bool = True) -> subprocess.Popen:
    """One pod's torchrun agent, with the arguments the operator renders (torchrun_command). On a
    cluster only pod 0's name is the endpoint, so only it hosts the store; here every agent is on
    127.0.0.1, so the others are told they are not the host."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "--nnodes=2",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=lost-rank",
               *([] if host else ["--rdzv-conf=is_host=false"]),
               "--max-restarts=2", "-m", "negrl_operator.cli", "train", "--config", str(config_path), "--no-progress"]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=log.open("w") if log else subprocess.PIPE, text=True, start_new_session=True)


def train_env() -> dict:
    env = {**os.environ, **single_process_env()}
    return {k: v for k, v in env.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"}}


def stage(tiny_model_dir: Path, folder: Path) -> tuple:
    folder.mkdir(parents=True)
    config = train_config("dpo", tiny_model_dir, folder, **PARAMS)
    path = folder / "stage.json"
    path.write_text(config.model_dump_json())
    return config, path


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    config, path = stage(tiny_model_dir, folder / "run")
    port = free_port()
    nodes = [agent(path, port, train_env(), folder / f"whole{i}.log", host=i == 0) for i in range(2)]
    for node in nodes:
        node.communicate(timeout=600)
    assert [node.returncode for node in nodes] == [0, 0], (folder / "whole0.log").read_text()[-3000:]
    return config


# Replacing only the lost rank does not work with torch 2.13's elastic agent (pytorch/pytorch#147064):
# tried here, the replacement waited 60 s for the new round's MASTER_ADDR and node 0's agent for the
# replacement's role info, then both failed. So no launcher replaces one rank in place.
def test_lost_rank_resumes_and_ends_where_an_uninterrupted_run_does(uninterrupted, tiny_model_dir, tmp_path):
    env = train_env()
    config, path = stage(tiny_model_dir, tmp_path / "lost")
    port = free_port()
    node0 = agent(path, port, env, tmp_path / "first0.log")
    node1 = agent(path, port, env, tmp_path / "first1.log", host=False)
    checkpoints = Path(config.output_dir) / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("step-*/complete.json")):
        if node0.poll() is not None or node1.poll() is not None or time.monotonic() > deadline:
            for node in (node0, node1):
                kill_pod(node)
            pytest.fail(f"no checkpoint before exit/timeout:\n{(tmp_path / 'first0.log').read_text()[-3000:]}")
        time.sleep(0.05)
    lost_at = time.monotonic()
    kill_pod(node1)  # the lost pod: its agent and its worker
    kill_pod(node0)  # the group restart: the other pods go too
    port = free_port()  # the new pods; the new node 0 hosts a new rendezvous store
    node0 = agent(path, port, env, tmp_path / "node0.log")
    node1 = agent(path, port, env, tmp_path / "node1.log", host=False)  # the replacement pod
    outputs = []
    for node in (node0, node1):
        try:
            outputs.append(node.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            kill_pod(node0)
            kill_pod(node1)
            pytest.fail("an agent did not exit:\n" + (tmp_path / "node1.log").read_text()[-4000:])
    assert (node0.returncode, node1.returncode) == (0, 0), (tmp_path / "node1.log").read_text()[-3000:]
    manifest = json.loads((Path(config.output_dir) / "manifest.json").read_text())["summary"]
    assert manifest["world_size"] == 2 and manifest["steps"] == PARAMS["max_steps"], manifest
    assert 2 <= manifest["resumed_from_step"] < PARAMS["max_steps"], manifest  # resumed, not restarted from 0
    print(f"lost rank (group replaced) -> finished run: {time.monotonic() - lost_at:.1f}s")

    whole = [json.loads(line) for line in (Path(uninterrupted.output_dir) / "train_log.jsonl").read_text().splitlines()]
    lost = [json.loads(line) for line in (Path(config.output_dir) / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lost] == [row["step"] for row in whole] == list(range(1, PARAMS["max_steps"] + 1))
    assert lost[-1]["loss"] == pytest.approx(whole[-1]["loss"], rel=1e-4)  # the same final loss position
    for key, value in exported_weights(uninterrupted.output_dir).items():
        torch.testing.assert_close(exported_weights(config.output_dir)[key], value, rtol=1e-4, atol=1e-5, msg=key)
