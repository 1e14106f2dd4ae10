"""The trainer on real DeepSpeed (CPU, gloo) with a tiny model built by the test session:
SFT, RFT and DPO under ZeRO-2 and ZeRO-3, accumulation, kill-and-resume, the command, /metrics,
and the exported checkpoint served by the real vLLM server."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
import torch

from negrl_operator.api.stage_config import TrainStageConfig
from tests.fixtures.deepspeed_cpu import free_port
from tests.fixtures.paths import GSM8K_DIR, REPO

N_EXAMPLES = 16


def gsm8k_rows(count: int = N_EXAMPLES) -> list[dict]:
    with open(GSM8K_DIR / "train.jsonl") as handle:
        return [json.loads(line) for line, _ in zip(handle, range(count), strict=False)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def prompt_of(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def stage_data(stage: str, folder: Path) -> list[str]:
    """sft: {question, solution}; rft: Demonstration records; dpo: per-step and outcome pairs."""
    rows = gsm8k_rows()
    if stage == "sft":
        return [write_jsonl(folder / "sft.jsonl", [{"question": r["question"], "solution": r["answer"]} for r in rows])]
    if stage == "rft":
        return [write_jsonl(folder / "rft.jsonl", [
            {"question_id": str(i), "prompt": prompt_of(r["question"]), "response": " " + r["answer"], "source": "self"}
            for i, r in enumerate(rows)])]
    pairs = []
    for i, r in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["answer"]  # a wrong solution: another question's
        kind = "step" if i % 2 else "outcome"
        rejected = " " + (other.split("\n")[0] if kind == "step" else other)  # step: a prefix, no EOS
        pairs.append({"question_id": str(i), "kind": kind, "prompt": prompt_of(r["question"]),
                      "chosen": " " + r["answer"], "rejected": rejected, "chosen_source": "self",
                      "rejected_sample_index": 0})
    return [write_jsonl(folder / "pairs.jsonl", pairs)]


def train_config(stage: str, model_dir: Path, folder: Path, **params) -> TrainStageConfig:
    settings = {"learning_rate": 3e-3, "max_steps": 4, "micro_batch_size": 4, "gradient_accumulation": 1,
                "max_length": 64, "warmup_ratio": 0.0, "schedule": "constant", "zero_stage": 2, **params}
    return TrainStageConfig(output_dir=str(folder / "out"), stage=stage, model_path=str(model_dir),
                            data=stage_data(stage, folder), params=settings)


def fixed_batch_loss(model_dir: str | Path, config: TrainStageConfig) -> float:
    """Loss of the first 8 training examples under the model in model_dir (DPO: against the initial model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from negrl_trainer.batch import collate
    from negrl_trainer.data import encode_records, read_data
    from negrl_trainer.loss import dpo_loss, nll_sum, sequence_logps
    from negrl_trainer.objective import logits_of

    tokenizer = AutoTokenizer.from_pretrained(config.model_path)
    examples = encode_records(read_data(config.data), tokenizer, stage=config.stage, spec=config.prompt,
                              max_length=config.params.max_length, max_examples=8)
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        def logps_of(path):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            return logits_of(model, batch, "cpu")

        if config.stage != "dpo":
            total, count = nll_sum(logps_of(model_dir), batch.labels)
            return float(total / count)
        policy, _ = sequence_logps(logps_of(model_dir), batch.labels)
        reference, _ = sequence_logps(logps_of(config.model_path), batch.labels)
        return float(dpo_loss(policy[:8], policy[8:], reference[:8], reference[8:], 0.1).losses.mean())


def exported_weights(output_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(output_dir) / "model" / "model.safetensors")


@pytest.mark.parametrize("zero_stage", [2, 3])
@pytest.mark.parametrize("stage", ["sft", "rft", "dpo"])
def test_stage_reduces_its_loss_on_a_fixed_batch(stage, zero_stage, tiny_model_dir, deepspeed_cpu, tmp_path):
    from negrl_trainer.loop import run_training

    config = train_config(stage, tiny_model_dir, tmp_path, zero_stage=zero_stage)
    before = fixed_batch_loss(tiny_model_dir, config)
    summary = run_training(config)
    after = fixed_batch_loss(Path(config.output_dir) / "model", config)
    assert after < before - 0.01, f"{stage} ZeRO-{zero_stage}: fixed-batch loss {before:.4f} -> {after:.4f}"
    assert summary["steps"] == 4 and summary["zero_stage"] == zero_stage and summary["examples"] == N_EXAMPLES
    log = [json.loads(line) for line in (Path(config.output_dir) / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3, 4]
    assert all(record["grad_norm"] > 0 and record["tokens_per_second"] > 0 and record["learning_rate"] == 3e-3
               for record in log)
    if stage == "dpo":
        assert before == pytest.approx(math.log(2), abs=1e-6)
        assert summary["first_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
        assert {"chosen_reward", "rejected_reward", "reward_margin", "preference_accuracy"} <= set(log[-1])
        assert log[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    manifest = json.loads((Path(config.output_dir) / "manifest.json").read_text())
    assert manifest["summary"]["steps"] == 4 and manifest["inputs_hash"]
    assert run_training(config)["skipped"] is True  # same inputs: a no-op


def test_packed_sft_with_gradient_checkpointing_reduces_its_loss(tiny_model_dir, deepspeed_cpu, tmp_path):
    from negrl_trainer.loop import run_training

    rows = [{"prompt": f"Question: what is {a} plus {b}?\nAnswer:", "response": f" {a + b}"}
            for a in range(1, 9) for b in range(1, 5)]
    config = TrainStageConfig(output_dir=str(tmp_path / "out"), stage="sft", model_path=str(tiny_model_dir),
                              data=[write_jsonl(tmp_path / "sums.jsonl", rows)],
                              params={"learning_rate": 3e-3, "max_steps": 4, "micro_batch_size": 2, "max_length": 64,
                                      "warmup_ratio": 0.0, "schedule": "constant", "packing": True,
                                      "gradient_checkpointing": True, "zero_stage": 2})
    before = fixed_batch_loss(tiny_model_dir, config)
    summary = run_training(config)
    assert summary["units"] < summary["examples"] == 32  # several sequences per packed row
    assert fixed_batch_loss(Path(config.output_dir) / "model", config) < before - 0.01


def test_accumulating_micro_batches_matches_a_bigger_micro_batch(tiny_model_dir, deepspeed_cpu, tmp_path):
    """Same loss and gradient norm (so DeepSpeed's scaling is undone exactly) and the same weights
    (Adam amplifies float noise in near-zero gradients, hence atol relative to lr x steps = 6e-3)."""
    from negrl_trainer.loop import run_training

    weights, logs = [], []
    for name, micro, accumulation in [("big", 4, 1), ("accumulated", 1, 4)]:
        folder = tmp_path / name
        folder.mkdir()
        config = train_config("sft", tiny_model_dir, folder, micro_batch_size=micro,
                              gradient_accumulation=accumulation, max_steps=2)
        run_training(config)
        weights.append(exported_weights(config.output_dir))
        logs.append([json.loads(line) for line in (folder / "out" / "train_log.jsonl").read_text().splitlines()])
    for big, accumulated in zip(*logs, strict=True):
        assert accumulated["loss"] == pytest.approx(big["loss"], rel=1e-5)
        assert accumulated["grad_norm"] == pytest.approx(big["grad_norm"], rel=1e-5)
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=1e-4, msg=key)


def run_command(config_path: Path, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "negrl_operator.cli", "train", "--config", str(config_path),
                             "--no-progress"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def kill_after_first_checkpoint(process: subprocess.Popen, checkpoints: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(checkpoints.glob("step-*/complete.json")):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no checkpoint before exit/timeout; stderr:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tiny_model_dir, deepspeed_cpu,
                                                                     deepspeed_cpu_env, tmp_path):
    from negrl_trainer.loop import run_training

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    params = {"zero_stage": 3, "max_steps": 12, "checkpoint_every_steps": 2, "learning_rate": 1e-3}
    uninterrupted = train_config("dpo", tiny_model_dir, tmp_path / "a", **params)
    run_training(uninterrupted)
    config = train_config("dpo", tiny_model_dir, tmp_path / "b", **params)
    config_path = tmp_path / "b" / "stage.json"
    config_path.write_text(config.model_dump_json())
    output = Path(config.output_dir)

    kill_after_first_checkpoint(run_command(config_path, deepspeed_cpu_env), output / "checkpoints")
    assert not (output / "manifest.json").exists(), "the run finished before it could be killed"

    termination = tmp_path / "termination-log"
    env = {**deepspeed_cpu_env, "NEGRL_TERMINATION_LOG": str(termination)}
    stdout, stderr = run_command(config_path, env).communicate(timeout=300)
    assert (output / "manifest.json").exists(), stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert 2 <= summary["resumed_from_step"] < 12 and summary["steps"] == 12, summary
    assert summary["reference_cached"] is True
    assert json.loads(termination.read_text()) == summary
    for key, value in exported_weights(uninterrupted.output_dir).items():
        torch.testing.assert_close(exported_weights(output)[key], value, rtol=1e-4, atol=1e-5, msg=key)
    log_steps = [json.loads(line)["step"] for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert log_steps == list(range(1, 13))

    rerun = run_command(config_path, env)
    stdout, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] is True


def test_two_ranks_under_torchrun_match_one_rank_with_the_same_global_batch(tiny_model_dir, deepspeed_cpu,
                                                                           deepspeed_cpu_env, tmp_path):
    """DPO under ZeRO-3 on 2 gloo ranks (reference pass shared and gathered, partitions gathered for
    the export) ends with the weights of one rank running micro-batches twice as large."""
    from negrl_trainer.loop import run_training

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = train_config("dpo", tiny_model_dir, tmp_path / "one", zero_stage=3, micro_batch_size=4)
    run_training(one)
    two = train_config("dpo", tiny_model_dir, tmp_path / "two", zero_stage=3, micro_batch_size=2)
    config_path = tmp_path / "two" / "stage.json"
    config_path.write_text(two.model_dump_json())
    env = {k: v for k, v in deepspeed_cpu_env.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"}}
    process = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                              "-m", "negrl_operator.cli", "train", "--config", str(config_path), "--no-progress"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["steps"] == 4
    for key, value in exported_weights(one.output_dir).items():
        torch.testing.assert_close(exported_weights(two.output_dir)[key], value, rtol=0, atol=1e-4, msg=key)


def test_command_reports_a_bad_config(tmp_path, deepspeed_cpu_env):
    config_path = tmp_path / "stage.json"
    config_path.write_text(json.dumps({"kind": "train", "stage": "ppo", "outputDir": "x", "modelPath": "m",
                                       "data": ["d"]}))
    process = run_command(config_path, deepspeed_cpu_env)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 3  # CONFIG_ERROR: not retryable
    assert "stage" in json.loads(stdout.strip().splitlines()[-1])["error"]
    assert stderr.strip().splitlines() == [stderr.strip()] and "Traceback" not in stderr


def test_metrics_are_served_on_the_metrics_port():
    from negrl_trainer.train_command import TrainMetrics

    port = free_port()
    metrics = TrainMetrics(port, "exp", "dpo", node_rank="1")
    metrics({"step": 3, "total_steps": 10, "loss": 0.5, "learning_rate": 1e-6, "grad_norm": 2.0, "tokens": 100,
             "tokens_per_second": 50.0, "reward_margin": 0.25, "preference_accuracy": 0.75})
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    metrics.server.shutdown()
    for line in ['negrl_trainer_loss{experiment="exp",node_rank="1",stage="dpo"} 0.5',
                 'negrl_trainer_reward_margin{experiment="exp",node_rank="1",stage="dpo"} 0.25',
                 'negrl_trainer_tokens_total{experiment="exp",node_rank="1",stage="dpo"} 100.0',
                 'negrl_trainer_step{experiment="exp",node_rank="1",stage="dpo"} 3.0']:
        assert line in text


def scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


def served_steps(port: int, served: dict) -> dict:
    """node_rank -> planned steps, from the negrl_trainer_steps series /metrics on `port` serves now."""
    for line in scrape(port).splitlines():
        if line.startswith('negrl_trainer_steps{experiment="exp",node_rank="') and float(line.split()[-1]):
            served[port] = (line.split('node_rank="')[1].split('"')[0], float(line.split()[-1]))
    return served


def test_every_pod_of_a_two_node_run_serves_metrics_on_the_declared_port(tiny_model_dir, deepspeed_cpu_env,
                                                                          tmp_path):
    """Two torchrun agents ("pods", one rank each) in one c10d rendezvous, each with its own metrics
    port (one host cannot give both the same one): the pod without global rank 0 serves /metrics
    too, with the same reduced figures, labelled with its node rank."""
    ports, rendezvous = [free_port(), free_port()], free_port()
    config = train_config("sft", tiny_model_dir, tmp_path, max_steps=20, micro_batch_size=2)
    env = {k: v for k, v in deepspeed_cpu_env.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"}}
    processes = []
    for pod, port in enumerate(ports):
        path = tmp_path / f"stage-{pod}.json"
        path.write_text(config.model_copy(update={"metrics_port": port, "experiment": "exp"}).model_dump_json())
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
             f"--rdzv-endpoint=127.0.0.1:{rendezvous}", "--rdzv-id=metrics", "-m", "negrl_operator.cli", "train",
             "--config", str(path), "--no-progress"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    served: dict = {}
    while any(p.poll() is None for p in processes) and len(served) < 2:  # planned steps: set at the first step
        for port in ports:
            served_steps(port, served)
        time.sleep(0.05)
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    last = [out.strip().splitlines()[-1] for out, _ in outputs]
    (summary,) = [json.loads(line) for line in last if line.startswith("{")]  # rank 0's only
    assert summary["world_size"] == 2 and summary["steps"] > 1
    assert sorted(served.values()) == [("0", summary["steps"]), ("1", summary["steps"])], served


def test_exported_checkpoint_is_served_by_vllm(tiny_model_dir, deepspeed_cpu, vllm_server_for, tmp_path):
    from negrl_trainer.loop import run_training

    config = train_config("sft", tiny_model_dir, tmp_path, zero_stage=3, max_steps=2)
    model_dir = Path(run_training(config)["model"])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model_dir.iterdir()}
    server = vllm_server_for(model_dir, "trained")
    response = httpx.post(f"{server.base_url}/completions", timeout=120, json={
        "model": server.model, "prompt": prompt_of(gsm8k_rows(1)[0]["question"]), "max_tokens": 8,
        "temperature": 0.0, "ignore_eos": True})
    response.raise_for_status()
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["text"]


def test_no_training_example_keeps_the_initial_model(tiny_model_dir, deepspeed_cpu, tmp_path):
    from negrl_trainer.loop import run_training

    config = train_config("rft", tiny_model_dir, tmp_path)
    empty = tmp_path / "rft.jsonl"
    empty.write_text("")
    config = config.model_copy(update={"data": [str(empty)]})
    summary = run_training(config)
    assert (summary["examples"], summary["steps"]) == (0, 0)
    assert summary["untrained"].startswith("no training examples")
    from safetensors.torch import load_file

    initial, kept = load_file(Path(tiny_model_dir) / "model.safetensors"), exported_weights(config.output_dir)
    assert initial.keys() == kept.keys() and all(torch.equal(initial[k], kept[k]) for k in initial)
    assert json.loads((Path(config.output_dir) / "manifest.json").read_text())["summary"] == summary


def test_selection_keeps_the_best_scored_checkpoint_not_the_last(tiny_model_dir, deepspeed_cpu, tmp_path):
    """Scored every half epoch (steps 2 and 4 of 4): the untrained-for-GSM8K tiny model scores 0 on
    both, so the earliest of the equal scores wins and `model` holds the weights after step 2, the same
    as a run that stops there (constant learning rate, so the first two steps are the same)."""
    from negrl_operator.api.stage_config import SelectionConfig
    from negrl_trainer.loop import run_training

    questions = write_jsonl(tmp_path / "validation.jsonl", [
        {"id": f"v{i}", "question": row["question"], "answer": row["answer"]} for i, row in enumerate(gsm8k_rows(4))])
    selection = SelectionConfig(questions=questions, task="gsm8k", every_epochs=0.5, max_questions=3, max_tokens=8)
    (tmp_path / "selected").mkdir()
    (tmp_path / "short").mkdir()
    selected = train_config("sft", tiny_model_dir, tmp_path / "selected", zero_stage=0).model_copy(
        update={"selection": selection})
    summary = run_training(selected)
    scores = [json.loads(line) for line in (Path(selected.output_dir) / "selection.jsonl").read_text().splitlines()]
    assert [(s["step"], s["epoch"], s["accuracy"]) for s in scores] == [(2, 0.5, 0.0), (4, 1.0, 0.0)]
    assert (summary["steps"], summary["selected_step"], summary["validation_accuracy"]) == (4, 2, 0.0)
    short = train_config("sft", tiny_model_dir, tmp_path / "short", zero_stage=0, max_steps=2)
    run_training(short)
    for key, value in exported_weights(short.output_dir).items():
        torch.testing.assert_close(exported_weights(selected.output_dir)[key], value, rtol=0, atol=1e-6, msg=key)
