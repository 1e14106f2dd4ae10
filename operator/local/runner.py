"""`negrl run`: an experiment manifest on this machine, without Kubernetes.

The same manifest, spec model and stage graph as the operator; each stage runs as the same
`negrl <stage> --config` command a Job runs, as a child process (one per shard of a sharded stage, in
turn), with its log under `<workdir>/logs/`. A finished pretrain (or teacher-sft) stage is kept in a
cache by content (`stage_cache`), so a shared base (or a scratch teacher) is trained once per machine.
Policies are served by a local vLLM server (or, without vLLM, by transformers behind the same OpenAI
protocol). Finished stages are skipped on a rerun (their manifest matches their inputs and is newer
than what they read); Ctrl-C stops the running stage and every server, and leaves only complete
artifacts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

import negrl_trainer
from negrl_operator.api.artifact import MANIFEST, inputs_hash, stage_done, write_json_atomic
from negrl_operator.api.exit_code import ConfigError
from negrl_operator.api.experiment import NegRLExperiment
from negrl_operator.api.progress import is_progress_line
from negrl_operator.api.stage_config import ServerRef, read_input, validation_problems
from negrl_operator.api.teacher import TEACHER_SFT
from negrl_operator.local.stage_cache import cache_dir, cache_key, file_digests, restore, store
from negrl_operator.local.summary import read_summary, shard_summaries, stage_summary, summary_path
from negrl_operator.local.view import RunView, run_view
from negrl_operator.reconcile.graph import (
    StageNode,
    policies_to_serve,
    policy_model,
    runnable,
    stage_config,
    stage_graph,
)
from negrl_operator.reconcile.serving import serving
from negrl_operator.report.writer import write_report
from negrl_sampler.serving.local_server import ServerStartError, stop_process_group, vllm_available

CACHED_ROLES = {"pretrain", TEACHER_SFT}  # the longest stages, the same in every run that shares them


class StageFailed(RuntimeError):
    pass


def load_experiment(path: str | Path) -> NegRLExperiment:
    """The manifest at `path` (`-`: standard input); ConfigError names the file and the fields."""
    source = "<stdin>" if str(path) == "-" else str(path)
    try:
        document = yaml.safe_load(read_input(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: not a NegRLExperiment manifest (a YAML mapping with apiVersion, kind, "
                          "metadata and spec)")
    try:
        return NegRLExperiment.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid NegRLExperiment: {validation_problems(error)}") from None


def next_stage(ready: list[StageNode], serving: set[str]) -> StageNode | None:
    """Which ready stage to run next, so each policy's server starts once: first the stages of a
    policy already served, then stages that need no server, then the rest in graph order. SFT
    sweep points (the baseline's curve) wait for the methods' chain: its results come first."""
    for wanted in (lambda n: n.serves in serving, lambda n: n.serves is None and n.multiplier == 1,
                   lambda n: True):
        for node in ready:
            if wanted(node):
                return node
    return None


class LocalServers:
    """The servers of the policies in use, started on demand and stopped when no stage needs them."""

    def __init__(self, backend: str, log_dir: Path):
        self.backend, self.log_dir = backend, log_dir
        self.running: dict[str, object] = {}

    def ensure(self, policy: str, model_dir: str, max_model_len: int) -> ServerRef:
        if policy not in self.running:
            self.running[policy] = self._start(policy, model_dir, max_model_len)
        server = self.running[policy]
        return ServerRef(base_url=server.base_url, model=server.model, max_concurrency=32)

    def _start(self, policy: str, model_dir: str, max_model_len: int):
        if self.backend == "vllm":
            from negrl_sampler.serving.local_server import start_vllm

            return start_vllm(model_dir, served_name=policy, max_model_len=max_model_len, log_dir=self.log_dir)
        from negrl_sampler.serving.transformers_server import TransformersServer

        return TransformersServer(model_dir, served_name=policy)

    def keep_only(self, policies: set[str]) -> None:
        for policy in [p for p in self.running if p not in policies]:
            self.running.pop(policy).stop()

    def stop_all(self) -> None:
        self.keep_only(set())


def copy_output(stream, log, relay) -> None:
    """The stage's output into its log, line by line; its progress lines also to `relay`."""
    for raw in iter(stream.readline, b""):
        log.write(raw.decode(errors="replace"))
        log.flush()
        line = raw.decode(errors="replace").rstrip()
        if is_progress_line(line):
            relay(line)


def run_stage(node: StageNode, config, workdir: Path, relay=lambda node, line: None) -> dict:
    """Run one stage as child processes, one per shard (spec.worker.shards) in turn; return its
    one-line JSON summary (of a sharded stage: its shards' merged, `stage_summary`)."""
    if config.shard_count == 1:
        return run_command(node, config, workdir, node.name, relay)
    for stale in shard_summaries(workdir, node.name):  # of a run with other shard counts
        stale.unlink()
    for index in range(config.shard_count):  # a shard finished before reports its summary again
        run_command(node, config.model_copy(update={"shard_index": index}), workdir, f"{node.name}-shard-{index}",
                    relay)
    return stage_summary(workdir, node.name, node.kind)


def run_command(node: StageNode, config, workdir: Path, name: str, relay) -> dict:
    """`negrl <kind> --config` as a child process, its log in logs/<name>.log; its summary."""
    config_path = workdir / "configs" / f"{name}.json"
    write_json_atomic(config_path, config.model_dump(mode="json"))
    log_path = workdir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "negrl_operator.cli", node.kind, "--config", str(config_path)]
    env = {**os.environ, "NEGRL_TERMINATION_LOG": str(summary_path(workdir, name)),
           "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"), "HF_HUB_OFFLINE": "1"}
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        copier = threading.Thread(target=copy_output, args=(child.stdout, log, lambda line: relay(node, line)),
                                  daemon=True)
        copier.start()
        try:
            code = child.wait()
        except BaseException:  # Ctrl-C: stop the stage (its artifacts are written atomically)
            stop_process_group(child, grace_s=30)
            raise
        finally:
            copier.join(timeout=30)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise StageFailed(f"stage {name} failed (exit {code}); log {log_path}:\n{tail}")
    return read_summary(workdir, name)


def run_cached(node: StageNode, config, workdir: Path, relay=lambda node, line: None) -> dict:
    """A stage kept by content under ~/.cache/negrl/stages: restored when this machine did it before
    with the same config and inputs, else run and kept."""
    root, stage_dir = str(workdir / "artifacts"), workdir / "artifacts" / node.name
    code = Path(negrl_trainer.__file__).parent
    key = cache_key(config, root, file_digests([code, Path(config.model_path), *map(Path, config.data)]))
    summary = restore(key, stage_dir, config)
    if summary is None:
        summary = run_stage(node, config, workdir, relay)
        store(key, stage_dir, summary)
        return summary
    relay(node, f"{node.name}: restored from the stage cache, {cache_dir() / key}")
    write_json_atomic(summary_path(workdir, node.name), summary)
    return summary


def finished_stages(spec, nodes: list[StageNode], root: str) -> set[str]:
    """Stages whose manifest matches the inputs they would run with now (the URL is not an input)
    and is newer than the manifests of the stages it read: a rerun upstream invalidates it."""
    placeholder = ServerRef(base_url="http://127.0.0.1:1/v1", model="unused")
    done: set[str] = set()
    for node in nodes:  # dependencies first
        manifest = Path(root) / node.name / MANIFEST
        if (stage_done(manifest.parent, inputs_hash(stage_config(spec, node, root, placeholder)))
                and all(need in done and (Path(root) / need / MANIFEST).stat().st_mtime_ns
                        <= manifest.stat().st_mtime_ns for need in node.needs)):
            done.add(node.name)
    return done


def clear_stale(stage_dir: Path) -> None:
    """A finished stage that must run again starts from nothing; a half-done one (no manifest) resumes."""
    if (stage_dir / MANIFEST).exists():
        shutil.rmtree(stage_dir)


def run_experiment(experiment: NegRLExperiment, workdir: Path, backend: str, view: RunView) -> dict[str, dict]:
    """Run every unfinished stage in dependency order; returns each stage's summary."""
    spec, nodes = experiment.spec, stage_graph(experiment.spec)
    root = str(workdir / "artifacts")
    done = finished_stages(spec, nodes, root)
    view.begin(nodes, done)
    servers = LocalServers(backend, workdir / "logs")
    try:
        while node := next_stage(runnable(nodes, done), set(servers.running)):
            servers.keep_only(set(policies_to_serve(nodes, done)))
            server = None
            if node.serves:  # a served teacher has a model length of its own (serving.py, as on a cluster)
                server = servers.ensure(node.serves, policy_model(spec, node.serves, root),
                                        serving(spec, node.serves).max_model_len)
            config = stage_config(spec, node, root, server, experiment=experiment.metadata.name)
            clear_stale(Path(root) / node.name)
            view.started(node)
            run = run_cached if node.role in CACHED_ROLES else run_stage
            summary = run(node, config, workdir, view.relay)
            done.add(node.name)
            view.finished(node, summary)
    finally:
        servers.stop_all()
    summaries = {node.name: stage_summary(workdir, node.name, node.kind) for node in nodes}
    write_json_atomic(workdir / "summaries.json", summaries)
    return summaries


def resolve_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    return "vllm" if vllm_available() else "transformers"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="negrl run", description="Run a NegRLExperiment on this machine.")
    parser.add_argument("-f", "--file", required=True, help="NegRLExperiment manifest (YAML; `-`: stdin)")
    parser.add_argument("--workdir", help="artifacts, logs and the report (default: runs/<experiment name>)")
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers"], default=None,
                        help="how policies are served (default: the manifest's sampler.localBackend)")
    args = parser.parse_args(argv)
    experiment = load_experiment(args.file)  # a bad path or manifest: one line and exit 4 or 3 (cli.main)
    workdir = Path(args.workdir or f"runs/{experiment.metadata.name}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    backend = resolve_backend(args.backend or experiment.spec.sampler.local_backend)
    view = run_view(experiment.metadata.name, backend)
    # Ctrl-C and `kill` stop the run cleanly, even when started with SIGINT ignored (a background job)
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    begin = time.monotonic()
    try:
        with view:
            summaries = run_experiment(experiment, workdir, backend, view)
    except KeyboardInterrupt:
        print("negrl run: interrupted; finished stages are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except (StageFailed, ServerStartError) as error:
        print(f"negrl run: {error}", file=sys.stderr)
        return 1
    write_report(experiment, summaries, workdir, time.monotonic() - begin, view.console)
    if experiment.spec.tracking.mlflow_uri:
        from negrl_trainer.tracking import record_experiment

        record_experiment(experiment.spec.tracking.params(), experiment.metadata.name,
                          sorted(workdir.glob("*.png")) + [workdir / "report.md", workdir / "results.json"])
    return 0
