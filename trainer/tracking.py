"""Where a stage's curves go besides its artifacts: TensorBoard event files in <stage>/tensorboard,
and, when `tracking.mlflowUri` is set, an MLflow run per stage nested under one run per experiment.

Used by the training stages (a point per optimizer step), by the sample, credit and eval stages
(their headline figures once, when the stage's last shard finishes) and by `negrl run` (the report
attached to the experiment's run). The pure helpers below name the scalars; the writers are
TensorBoard's and MLflow's own. MLflow is an optional extra (`negrl[tracking]`): asking for it
without the client installed is a config error, raised before any work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from negrl_operator.api.exit_code import ConfigError
from negrl_operator.api.stage_config import StageBase, TrackingParams

TENSORBOARD_DIR = "tensorboard"
# train_log.jsonl key -> scalar name (TensorBoard tag and MLflow metric key)
STEP_SCALARS: dict[str, str] = {
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "tokens_per_second": "train/tokens_per_second",
    "chosen_reward": "dpo/chosen_reward",
    "rejected_reward": "dpo/rejected_reward",
    "reward_margin": "dpo/reward_margin",
    "preference_accuracy": "dpo/preference_accuracy",
    "chosen_logp": "dpo/chosen_logp",
    "rejected_logp": "dpo/rejected_logp",
    "chosen_nll": "dpo/nll",
}
EXPERIMENT_TAG, STAGE_TAG, KIND_TAG = "negrl.experiment", "negrl.stage", "negrl.run"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under its parent
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
METRIC_BATCH = 200  # points sent per request (MLflow accepts up to 1000)


class TrackingError(ConfigError):
    """The tracking block asks for something this installation cannot do (exit CONFIG_ERROR)."""


def step_scalars(record: dict) -> dict[str, float]:
    """The scalars of one train_log.jsonl record (keys absent for the stage kind are left out)."""
    return {tag: float(record[key]) for key, tag in STEP_SCALARS.items() if record.get(key) is not None}


def summary_scalars(kind: str, summary: dict) -> dict[str, float]:
    """Every number of a stage summary as `<kind>/<key>`, plus the correct ratio of a sample stage."""
    scalars = {f"{kind}/{key}": float(value) for key, value in sorted(summary.items())
               if isinstance(value, int | float) and not isinstance(value, bool)}
    if kind == "sample" and summary.get("samples"):
        scalars["sample/correct_ratio"] = summary.get("correct", 0) / summary["samples"]
    return scalars


def flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, scalar values as text, lists as JSON."""
    params: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            params.update(flat_params(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
            params[name] = text[:MAX_PARAM_CHARS]
    return params


def stage_name(config: StageBase) -> str:
    """The graph's name of the stage (sft, step-dpo-s1, eval-rft, ...): its folder's name."""
    return Path(config.output_dir).name


class TensorBoardSink:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def artifact(self, path: Path) -> None:
        """Event files hold scalars only; the artifacts stay next to them in the stage folder."""

    def close(self, ok: bool) -> None:
        self.writer.close()


def mlflow_client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(f"tracking.mlflowUri is {uri!r} but the MLflow client is not installed: "
                            "pip install 'negrl[tracking]' (the worker image has it)") from None
    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another stage created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def experiment_run(client, exp_id: str, experiment: str) -> str:
    """The run of the whole experiment: found by tag, created by the first stage that needs it."""
    query = f"tags.`{EXPERIMENT_TAG}` = '{experiment}' and tags.`{KIND_TAG}` = 'experiment'"
    runs = client.search_runs([exp_id], filter_string=query, max_results=1, order_by=["attributes.start_time ASC"])
    if runs:
        return runs[0].info.run_id
    return client.create_run(exp_id, run_name=experiment, tags={EXPERIMENT_TAG: experiment, KIND_TAG: "experiment"}).info.run_id


class MlflowSink:
    """One stage's nested run. Points are sent in batches (one request per METRIC_BATCH points)."""

    def __init__(self, tracking: TrackingParams, experiment: str, stage: str | None, params: dict[str, str]):
        from mlflow.entities import Param

        self.client = mlflow_client(tracking.mlflow_uri)
        exp_id = experiment_id(self.client, tracking.mlflow_experiment)
        parent = experiment_run(self.client, exp_id, experiment)
        if stage is None:  # the experiment's own run (report, plots)
            self.run_id = parent
        else:
            tags = {EXPERIMENT_TAG: experiment, STAGE_TAG: stage, KIND_TAG: "stage", PARENT_TAG: parent}
            self.run_id = self.client.create_run(exp_id, run_name=stage, tags=tags).info.run_id
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])
        self.pending: list = []

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(key, value, now, step) for key, value in scalars.items()]
        if len(self.pending) >= METRIC_BATCH:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:METRIC_BATCH], self.pending[METRIC_BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)

    def artifact(self, path: Path) -> None:
        if path.exists():
            self.client.log_artifact(self.run_id, str(path))

    def close(self, ok: bool) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class Tracker:
    """A stage's sinks, opened on first use (a stage found already done opens none)."""

    def __init__(self, config: StageBase, stage: str | None = None, log_dir: Path | None = None):
        self.config, self.stage = config, stage if stage is not None else stage_name(config)
        self.log_dir = log_dir or Path(config.output_dir) / TENSORBOARD_DIR
        self.sinks: list | None = None

    def _open(self) -> list:
        if self.sinks is None:
            tracking, sinks = self.config.tracking, []
            if tracking.tensorboard:
                sinks.append(TensorBoardSink(self.log_dir))
            if tracking.mlflow_uri:
                params = flat_params(self.config.model_dump(mode="json", exclude={"tracking"}))
                sinks.append(MlflowSink(tracking, self.config.experiment, self.stage, params))
            self.sinks = sinks
        return self.sinks

    def start(self) -> Tracker:
        """Open the sinks now, so that a wrong URI or a missing client fails before the work."""
        self._open()
        return self

    def log(self, scalars: dict[str, float], step: int) -> None:
        for sink in self._open():
            sink.log(scalars, step)

    def finish(self, scalars: dict[str, float], artifacts: list[Path] = (), ok: bool = True, step: int = 0) -> None:
        for sink in self._open():
            sink.log(scalars, step)
            for path in artifacts:
                sink.artifact(Path(path))
            sink.close(ok)
        self.sinks = []

    def abort(self) -> None:
        """The stage failed: close what was opened, marking the MLflow run failed."""
        for sink in self.sinks or []:
            sink.close(False)
        self.sinks = []


def record_stage_summary(config: StageBase, kind: str, summary: dict, artifacts: list[Path] = ()) -> None:
    """A rollout stage's headline figures, once, when its last shard has finished."""
    Tracker(config).finish(summary_scalars(kind, summary), artifacts)


def record_experiment(tracking: TrackingParams, experiment: str, artifacts: list[Path]) -> None:
    """`negrl run`'s report and plots, attached to the experiment's run, which is then closed."""
    if not tracking.mlflow_uri:
        return
    sink = MlflowSink(tracking, experiment, None, {})
    for path in artifacts:
        sink.artifact(Path(path))
    sink.close(True)
