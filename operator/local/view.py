"""What `negrl run` shows while it runs. On a terminal, a live table: every stage with its state,
duration and headline figure, and the run's progress with an ETA from the mean duration of the
stages finished so far. Elsewhere (a pipe, a log, CI), plain lines on stdout: one when a stage
starts, one when it finishes (with the run's ETA), and the stages' own progress lines relayed."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from negrl_operator.api.progress import clock

HEADLINE_KEYS = ("pass_at_1", "final_loss", "loss", "pits", "correct", "step_pairs", "rft", "train")


def headline(summary: dict) -> str:
    for key in HEADLINE_KEYS:
        if key in summary:
            value = summary[key]
            return f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
    return ""


def eta_seconds(durations: list[float], remaining: int) -> float | None:
    return sum(durations) / len(durations) * remaining if durations else None


def started_line(elapsed_s: float, name: str, index: int, total: int) -> str:
    return f"[{clock(elapsed_s):>7}] start {name} (stage {index}/{total})"


def finished_line(elapsed_s: float, name: str, seconds: float, figure: str, finished: int, total: int,
                  eta: float | None) -> str:
    tail = f"; run ETA {clock(eta)}" if eta is not None and finished < total else ""
    return (f"[{clock(elapsed_s):>7}] done  {name} in {clock(seconds)}{f' ({figure})' if figure else ''}; "
            f"{finished}/{total} stages done{tail}")


class RunView:
    def __init__(self, experiment: str, backend: str, console: Console | None = None):
        self.experiment, self.backend = experiment, backend
        self.console = console or Console(stderr=True)
        self.rows: dict[str, dict] = {}
        self.durations: list[float] = []
        self.live = Live(console=self.console, refresh_per_second=2, get_renderable=self.render)

    def begin(self, nodes, done: set[str]) -> None:
        self.rows = {n.name: {"state": "done (kept)" if n.name in done else "pending", "seconds": None,
                              "figure": ""} for n in nodes}

    def started(self, node) -> None:
        self.rows[node.name].update(state="running", started=time.monotonic())

    def finished(self, node, summary: dict) -> None:
        row = self.rows[node.name]
        row.update(state="done", seconds=time.monotonic() - row["started"], figure=headline(summary))
        self.durations.append(row["seconds"])

    def relay(self, node, line: str) -> None:
        """A stage's progress line: the live table shows its own, so nothing here."""

    def render(self) -> Table:
        pending = sum(1 for row in self.rows.values() if row["state"] in {"pending", "running"})
        eta = eta_seconds(self.durations, pending)
        finished = len(self.rows) - pending
        title = (f"negrl run {self.experiment} [{self.backend}]  {finished}/{len(self.rows)} stages"
                 + (f"  ETA ~{eta / 60:.1f} min" if eta is not None else ""))
        table = Table(title=title, expand=False)
        for column in ("stage", "state", "time", "figure"):
            table.add_column(column)
        now = time.monotonic()
        for name, row in self.rows.items():
            seconds = row["seconds"] if row["seconds"] is not None else (
                now - row["started"] if row["state"] == "running" else None)
            table.add_row(name, row["state"], "" if seconds is None else f"{seconds:.0f}s", row["figure"])
        return table

    def __enter__(self) -> RunView:
        self.live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.live.stop()


class LogView(RunView):
    """The same events as plain lines on stdout, for a pipe, a log file or CI."""

    def __init__(self, experiment: str, backend: str, out=None, console: Console | None = None):
        super().__init__(experiment, backend, console)
        self.out, self.began = out or sys.stdout, time.monotonic()

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def begin(self, nodes, done: set[str]) -> None:
        super().begin(nodes, done)
        self._print(f"negrl run {self.experiment} [{self.backend}]: {len(nodes)} stages, "
                    f"{len(done)} already done")

    def started(self, node) -> None:
        super().started(node)
        index = sum(1 for row in self.rows.values() if row["state"] != "pending")
        self._print(started_line(time.monotonic() - self.began, node.name, index, len(self.rows)))

    def finished(self, node, summary: dict) -> None:
        super().finished(node, summary)
        row = self.rows[node.name]
        pending = sum(1 for r in self.rows.values() if r["state"] in {"pending", "running"})
        self._print(finished_line(time.monotonic() - self.began, node.name, row["seconds"], row["figure"],
                                  len(self.rows) - pending, len(self.rows), eta_seconds(self.durations, pending)))

    def relay(self, node, line: str) -> None:
        self._print(f"[{clock(time.monotonic() - self.began):>7}] {line}")

    def __enter__(self) -> LogView:
        return self

    def __exit__(self, *exc_info) -> None:
        pass


def run_view(experiment: str, backend: str, terminal: bool | None = None) -> RunView:
    """The live table on a terminal, plain lines elsewhere."""
    terminal = sys.stdout.isatty() if terminal is None else terminal
    return RunView(experiment, backend) if terminal else LogView(experiment, backend)
