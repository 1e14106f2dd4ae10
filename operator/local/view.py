"""The live terminal view of `negrl run`: every stage with its state, duration and headline figure,
and the run's progress with an ETA from the mean duration of the stages finished so far."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

HEADLINE_KEYS = ("pass_at_1", "final_loss", "pits", "correct", "step_pairs", "rft", "train")


def headline(summary: dict) -> str:
    for key in HEADLINE_KEYS:
        if key in summary:
            value = summary[key]
            return f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
    return ""


def eta_seconds(durations: list[float], remaining: int) -> float | None:
    return sum(durations) / len(durations) * remaining if durations else None


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
