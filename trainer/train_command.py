"""`negrl train --config stage.json`: one SFT, RFT or DPO stage (`dpo` covers per-step and outcome
pairs; they differ only in their data).

Run it directly on one machine, or under torchrun on 1..N GPUs and 1..M nodes. Rank 0 shows a
progress bar on a terminal (progress lines in a log), writes the curves to TensorBoard (and MLflow
when configured) and prints a one-line JSON summary at exit (also written to the termination-message
path when it exists). When metricsPort is set, local rank 0 of every pod serves /metrics (rank.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from negrl_operator.api.artifact import MANIFEST, TRAIN_LOG
from negrl_operator.api.progress import Throttle, period_s, progress_line
from negrl_operator.api.stage_config import STAGE_CONFIG_PATH, TrainStageConfig, load_stage_config
from negrl_operator.api.termination import report_summary
from negrl_trainer.rank import rank_role
from negrl_trainer.tracking import Tracker, stage_name, step_scalars, summary_scalars

# record key -> (metric name, help)
GAUGES: dict[str, tuple[str, str]] = {
    "step": ("negrl_trainer_step", "Optimizer steps done."),
    "total_steps": ("negrl_trainer_steps", "Optimizer steps planned for this stage."),
    "loss": ("negrl_trainer_loss", "Loss of the last optimizer step."),
    "learning_rate": ("negrl_trainer_learning_rate", "Learning rate of the last optimizer step."),
    "grad_norm": ("negrl_trainer_grad_norm", "Gradient 2-norm before clipping."),
    "tokens_per_second": ("negrl_trainer_tokens_per_second", "Tokens processed per second, all ranks."),
    "chosen_reward": ("negrl_trainer_chosen_reward", "DPO: mean beta*log(pi/ref) of the chosen side."),
    "rejected_reward": ("negrl_trainer_rejected_reward", "DPO: mean beta*log(pi/ref) of the rejected side."),
    "reward_margin": ("negrl_trainer_reward_margin", "DPO: chosen minus rejected reward."),
    "preference_accuracy": ("negrl_trainer_preference_accuracy_ratio", "DPO: fraction of pairs ranked right."),
}


class TrainMetrics:
    """Per-step figures as Prometheus gauges (and a token counter), served on /metrics."""

    def __init__(self, port: int, experiment: str, stage: str, registry=None, node_rank: str = "0"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = registry or CollectorRegistry()
        labels = {"experiment": experiment, "stage": stage, "node_rank": node_rank}
        self.gauges = {
            key: Gauge(name, text, list(labels), registry=self.registry).labels(**labels)
            for key, (name, text) in GAUGES.items()
        }
        self.tokens = Counter("negrl_trainer_tokens", "Tokens processed, all ranks.", list(labels),
                              registry=self.registry).labels(**labels)
        if port:
            self.server, self.thread = start_http_server(port, registry=self.registry)

    def __call__(self, record: dict) -> None:
        for key, gauge in self.gauges.items():
            if record.get(key) is not None:
                gauge.set(record[key])
        self.tokens.inc(record.get("tokens", 0))


class ProgressBar:
    """A rich progress bar over optimizer steps, started at the first step (when the total is known)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.progress = None
        self.task = None

    def __call__(self, record: dict) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self.progress is None:
            self.progress = Progress(
                TextColumn(f"{self.stage}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[figures]}"), transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.stage, total=record["total_steps"],
                                               completed=record["step"] - 1, figures="")
        self.progress.update(self.task, completed=record["step"], figures=step_figures(record))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def step_figures(record: dict) -> str:
    figures = f"loss {record['loss']:.4f} lr {record['learning_rate']:.2e} {record['tokens_per_second']:.0f} tok/s"
    if "reward_margin" in record:
        figures += (f" margin {record['reward_margin']:.3f} acc {record['preference_accuracy']:.2f}"
                    f" logp chosen {record['chosen_logp']:.2f} rejected {record['rejected_logp']:.2f}")
    return figures


class ProgressLines:
    """Progress for a log (no terminal): a line at the first step, every period, and the last step."""

    def __init__(self, stage: str, period: float):
        self.stage, self.throttle = stage, Throttle(period)
        self.began, self.first = time.monotonic(), None

    def __call__(self, record: dict) -> None:
        if self.first is None:
            self.first = record["step"] - 1
        now, total = time.monotonic(), record["total_steps"]
        if self.throttle.due(now, finished=record["step"] >= total):
            print(progress_line(self.stage, record["step"], total, "steps", now - self.began, self.first,
                                step_figures(record)), file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def tracking_callback(tracker: Tracker):
    return lambda record: tracker.log(step_scalars(record), record["step"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="negrl train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.environ.get("NEGRL_STAGE_CONFIG", STAGE_CONFIG_PATH),
                        help="stage config JSON (default: $NEGRL_STAGE_CONFIG or %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_stage_config(args.config, TrainStageConfig)  # errors: mapped by the CLI (exit 3 or 4)
    role = rank_role(os.environ, config.metrics_port)
    rank0 = role.leader
    from negrl_trainer.loop import run_training

    callbacks, bar, tracker = [], None, None
    label = stage_name(config)
    if role.serves_metrics:
        callbacks.append(TrainMetrics(config.metrics_port, config.experiment, config.stage, node_rank=role.node_rank))
    if rank0:
        tracker = Tracker(config).start()  # a wrong MLflow URI fails now, not after training
        callbacks.append(tracking_callback(tracker))
        if not args.no_progress:
            bar = ProgressBar(label) if sys.stderr.isatty() else ProgressLines(label, period_s())
            callbacks.append(bar)
    try:
        summary = run_training(config, callbacks)
    except Exception as error:  # the Job's summary says what failed; the traceback goes to the log
        traceback.print_exc(file=sys.stderr)
        if rank0:
            tracker.abort()
            report_summary({"stage": config.stage, "error": f"{type(error).__name__}: {error}"})
        return 1
    finally:
        if bar is not None:
            bar.close()
        leave_process_group()
    if rank0:
        out = Path(config.output_dir)
        tracker.finish(summary_scalars("summary", summary), [out / TRAIN_LOG, out / MANIFEST],
                       step=int(summary.get("steps") or 0))
        report_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
