"""Training curves where researchers open them: a real tiny DPO stage (`negrl train`) writes
TensorBoard event files, read back with TensorBoard's own reader, and an MLflow run nested under
the experiment's run on a real MLflow tracking server (sqlite backend, started here on loopback),
read back through MLflow's client API. The server runs from the overlay environment tools/setup.sh
builds (.cache/mlflow-server), as the full `mlflow` package does not fit vLLM's pins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from negrl_operator.api.stage_config import SampleStageConfig, ServerRef, TrackingParams
from negrl_trainer.tracking import STEP_SCALARS, record_experiment, record_stage_summary
from tests.component.test_trainer import train_config
from tests.fixtures.deepspeed_cpu import free_port
from tests.fixtures.paths import REPO

MLFLOW = REPO / ".cache" / "mlflow-server" / "bin" / "mlflow"
STEPS = 4
DPO_TAGS = {tag for key, tag in STEP_SCALARS.items() if key != "grad_norm"}  # grad_norm: ZeRO may not report it


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    assert MLFLOW.exists(), f"{MLFLOW} is missing: run `make setup` (tools/setup.sh builds the MLflow server env)"
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(folder / "server.log", "w")
    server = subprocess.Popen(
        [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "art")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder,  # not the repo: its
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})  # operator/ would shadow the stdlib
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=5)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (folder / "server.log").read_text()[-3000:]
            time.sleep(1)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
    log.close()


def event_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_dpo_stage_curves_in_tensorboard_and_mlflow(tiny_model_dir, deepspeed_cpu_env, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    config = train_config("dpo", tiny_model_dir, tmp_path, max_steps=STEPS).model_copy(update={
        "output_dir": str(tmp_path / "step-dpo"), "experiment": "tiny",
        "tracking": TrackingParams(mlflow_uri=mlflow_uri, mlflow_experiment="curves")})
    config_path = tmp_path / "stage.json"
    config_path.write_text(config.model_dump_json())
    env = {**deepspeed_cpu_env, "NEGRL_PROGRESS_EVERY_S": "0"}  # a progress line per step
    process = subprocess.run([sys.executable, "-m", "negrl_operator.cli", "train", "--config", str(config_path)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    progress = [line for line in process.stderr.splitlines() if line.startswith("progress: ")]
    assert [line.split()[2] for line in progress] == [f"{step}/{STEPS}" for step in range(1, STEPS + 1)]
    assert all(line.startswith("progress: step-dpo ") and "margin" in line for line in progress)

    log = [json.loads(line) for line in (tmp_path / "step-dpo" / "train_log.jsonl").read_text().splitlines()]
    scalars = event_scalars(tmp_path / "step-dpo" / "tensorboard")
    assert DPO_TAGS <= set(scalars)
    for tag in DPO_TAGS:
        assert [step for step, _ in scalars[tag]] == list(range(1, STEPS + 1)), tag
    key = "chosen_logp"
    assert [value for _, value in scalars["dpo/chosen_logp"]] == pytest.approx([r[key] for r in log], rel=1e-6)
    assert scalars["summary/steps"] == [(STEPS, STEPS)]

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("curves")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tiny", "step-dpo"}
    parent, child = runs["tiny"], runs["step-dpo"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == "FINISHED"
    assert child.data.params["stage"] == "dpo" and child.data.params["params.beta"] == "0.1"
    assert DPO_TAGS | {"summary/steps"} <= set(child.data.metrics)
    for tag in DPO_TAGS:
        assert [m.step for m in client.get_metric_history(child.info.run_id, tag)] == list(range(1, STEPS + 1))
    assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"train_log.jsonl", "manifest.json"}

    report = tmp_path / "report.md"
    report.write_text("# report\n")
    record_experiment(config.tracking, "tiny", [report])
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["report.md"]


def test_rollout_stage_headline_figures_in_tensorboard(tmp_path):
    config = SampleStageConfig(output_dir=str(tmp_path / "sample"), server=ServerRef(base_url="http://127.0.0.1:9/v1",
                               model="m"), task="gsm8k", questions="q.jsonl")
    record_stage_summary(config, "sample", {"questions": 4, "samples": 16, "correct": 6, "questions_path": "q"})
    scalars = event_scalars(tmp_path / "sample" / "tensorboard")
    assert scalars == {"sample/questions": [(0, 4.0)], "sample/samples": [(0, 16.0)], "sample/correct": [(0, 6.0)],
                       "sample/correct_ratio": [(0, 0.375)]}
