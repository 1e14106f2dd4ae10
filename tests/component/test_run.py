"""`negrl run` end to end on a shortened star-graph experiment: with the in-process transformers
sampler (two shards per rollout stage; interrupted, then resumed) and with real vLLM servers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.fixtures.paths import REPO


def shortened(tmp_path, backend: str, **overrides) -> str:
    manifest = yaml.safe_load((REPO / "examples" / "stargraph.yaml").read_text())
    spec = manifest["spec"]
    spec["data"]["source"].update(trainSize=48, testSize=8, validationSize=6)
    spec["data"]["syntheticSize"] = 24
    for stage in ("sft", "rft", "stepDpo", "outcomeDpo"):
        spec["stages"][stage]["params"].update(epochs=1)
    del spec["stages"]["sft"]["params"]["minSteps"]
    spec["stages"]["sft"]["select"].update(maxQuestions=6)  # each point keeps its best of 2 scores
    spec["stages"]["credit"]["params"].update(rollouts=2, negativesPerQuestion=1)
    spec["stages"]["sampling"]["params"].update(samplesPerQuestion=2)
    spec["stages"]["eval"]["params"].update(k=2)
    spec.update(seeds=[0], sweep={"sftMultipliers": [2]})
    spec["sampler"]["localBackend"] = backend
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = spec
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = tmp_path / f"stargraph-{backend}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return str(path)


def assert_curves(workdir, summaries: dict) -> None:
    """TensorBoard files in each stage's folder (curves of training stages, headline figures of
    the others) and the DPO health section of the report."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(stage: str) -> EventAccumulator:
        events = EventAccumulator(str(workdir / "artifacts" / stage / "tensorboard"))
        events.Reload()
        return events

    sft = scalars("sft")  # DPO's own tags: test_tracking (here the tiny policy may find no pair)
    for tag in ("train/loss", "train/learning_rate", "train/tokens_per_second"):
        assert [event.step for event in sft.Scalars(tag)] == list(range(1, summaries["sft"]["steps"] + 1)), tag
    pass_at_1 = scalars("eval-sft").Scalars("evaluate/pass_at_1")
    assert [(e.step, e.value) for e in pass_at_1] == [(0, pytest.approx(summaries["eval-sft"]["pass_at_1"]))]
    assert "sample/correct_ratio" in scalars("sample").Tags()["scalars"]
    assert "credit/pits" in scalars("credit").Tags()["scalars"]
    results = json.loads((workdir / "results.json").read_text())
    trained_dpo = {name for name in ("step-dpo", "outcome-dpo") if summaries[name]["steps"]}
    assert {check["stage"] for check in results["training_health"]} == trained_dpo
    assert all(isinstance(check["collapsed"], bool) for check in results["training_health"])
    report = (workdir / "report.md").read_text()
    assert "## Training curves" in report and "![training curves](training_curves.png)" in report
    assert (workdir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def negrl_run(manifest: str, workdir, **popen):
    command = [sys.executable, "-m", "negrl_operator.cli", "run", "-f", manifest, "--workdir", str(workdir)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **popen)


def wait_for_stage(workdir, stage: str, process, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (workdir / "artifacts" / stage / "manifest.json").exists():
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.5)
    raise AssertionError(f"stage {stage} did not finish within {timeout_s}s")


def assert_report(workdir, methods: set[str]) -> dict:
    results = json.loads((workdir / "results.json").read_text())
    assert {policy["method"] for policy in results["policies"]} == methods
    assert all(0.0 <= policy["accuracy"] <= 1.0 for policy in results["policies"])
    assert (workdir / "accuracy_vs_dsyn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (workdir / "report.md").read_text()
    assert "| method | accuracy |" in report and "effective data multiplier" in report
    return results


def assert_stage_lines(output: str, kept: set[str]) -> list[str]:
    """Not a terminal: one line per stage start and finish, in dependency order, with the run's ETA,
    and the stages' own progress lines relayed between them. Returns the stages run, in order."""
    lines = [line.split("] ", 1)[1] for line in output.splitlines() if line.startswith("[")]
    started = [line.split()[1] for line in lines if line.startswith("start ")]
    finished = [line.split()[1] for line in lines if line.startswith("done  ")]
    assert started == finished and not kept & set(started), output
    for index, name in enumerate(started):  # each stage ran after it started and before the next one
        assert lines.index(f"start {name} (stage {len(kept) + index + 1}/{len(kept) + len(started)})") \
            < next(i for i, line in enumerate(lines) if line.startswith(f"done  {name} in "))
    assert "run ETA" in next(line for line in lines if line.startswith(f"done  {started[0]} in "))
    relayed = [line for line in lines if line.startswith("progress: ")]
    assert any(line.startswith("progress: eval-sft ") and " questions " in line for line in relayed), relayed
    if "credit" in started:  # not finished before the interruption (it almost never is)
        assert any(line.startswith("progress: credit ") and "negatives credited" in line for line in relayed), relayed
    return started


def assert_training_progress(output: str, stage: str) -> None:
    """A training stage relays a progress line at its first and at its last step."""
    lines = [line.split("] ", 1)[1] for line in output.splitlines() if line.startswith("[")]
    steps = [line.split()[2] for line in lines if line.startswith(f"progress: {stage} ") and " steps " in line]
    total = steps[-1].split("/")[1]
    assert steps[0] == f"1/{total}" and steps[-1] == f"{total}/{total}", steps
    start = next(i for i, line in enumerate(lines) if line.startswith(f"start {stage} "))
    done = next(i for i, line in enumerate(lines) if line.startswith(f"done  {stage} in "))
    first = lines.index(next(line for line in lines if line.startswith(f"progress: {stage} 1/")))
    assert start < first < done


def test_transformers_backend_interrupted_then_resumed(tmp_path):
    workdir = tmp_path / "run"
    manifest = shortened(tmp_path, "transformers", worker={"shards": 2})  # each shard of a stage in turn
    first = negrl_run(manifest, workdir)
    wait_for_stage(workdir, "sample", first)
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output
    assert "rerun the same command to resume" in output
    assert output.startswith("negrl run stargraph [transformers]: ") and "[     0s] start prepare (stage 1/" in output
    assert_training_progress(output, "sft")
    finished = [path.parent for path in (workdir / "artifacts").glob("*/manifest.json")]
    kept = {stage.name: (stage / "manifest.json").stat().st_mtime_ns for stage in finished}
    assert {"prepare", "sft", "sample"} <= set(kept)

    second = negrl_run(manifest, workdir)
    output = second.communicate(timeout=900)[0]
    assert second.returncode == 0, output
    for name, mtime in kept.items():  # finished stages were not redone
        assert (workdir / "artifacts" / name / "manifest.json").stat().st_mtime_ns == mtime, name
    started = assert_stage_lines(output, set(kept))
    assert started.index("step-dpo") > started.index("step-pairs") > started.index("credit")
    summaries = json.loads((workdir / "summaries.json").read_text())
    assert all(summaries[name]["complete"] for name in ("credit", "eval-step-dpo", "eval-sft-x2"))
    assert_curves(workdir, summaries)
    assert summaries["step-dpo"]["stage"] == "dpo" and summaries["sft-x2"]["stage"] == "sft"
    for stage in ("sample", "credit"):  # sharded: a log per shard, and the summary merged over both
        shards = [json.loads((workdir / "logs" / f"{stage}-shard-{i}.summary.json").read_text()) for i in (0, 1)]
        assert summaries[stage]["questions"] == sum(shard["questions"] for shard in shards) > 0, stage
    assert summaries["sample"]["questions"] == 24  # syntheticSize: every training question, once
    results = assert_report(workdir, {"sft", "rft", "outcome-dpo", "step-dpo"})
    assert {(p["method"], p["multiplier"]) for p in results["policies"]} >= {("sft", 1), ("sft", 2)}


def test_vllm_backend_end_to_end(tmp_path):
    # two policies (sft and step-dpo) keep this to two vLLM start-ups
    manifest = shortened(tmp_path, "vllm", **{"stages.rft": {"enabled": False},
                                               "stages.outcomeDpo": {"enabled": False}, "sweep": {}})
    process = negrl_run(manifest, tmp_path / "run")
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output
    assert_report(tmp_path / "run", {"sft", "step-dpo"})
    logs = sorted(path.name for path in (tmp_path / "run" / "logs").glob("vllm-*.log"))
    assert [name.split("-")[1] for name in logs] == ["sft", "step"]
