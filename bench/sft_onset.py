"""When does the pipeline's own SFT learn to follow edges? A learning-rate check for the star-graph
example (issue 14) that needs no test data: it reruns the SFT stage of a finished `negrl run`
(same config, model initialisation per seed, data and data order) with other learning rates and
reports, from the training loss alone, the step at which edge-following appears.

On star graphs the loss sits on a plateau (~0.9-1.2 per answer token) while the model guesses
nodes, and falls to ~0.15-0.3 once it follows edges (only the first move is left to chance);
the onset is the first step whose trailing 100-step mean loss is below 0.5.

  python bench/sft_onset.py --workdir runs/stargraph --seeds 0 1 2 --lr 1e-3 5e-4
Last line: lr=... onsets=... (one per seed; "none" where the loss never left the plateau).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from negrl_operator.api.artifact import TRAIN_LOG
from negrl_operator.report.training import parse_train_log

WINDOW, LEARNED = 100, 0.5


def onset_step(losses: list[float], window: int = WINDOW, threshold: float = LEARNED) -> int | None:
    """The first step (1-based) whose trailing `window`-step mean loss is below `threshold`."""
    for end in range(window, len(losses) + 1):
        if sum(losses[end - window:end]) / window < threshold:
            return end
    return None


def train(config: dict, lr: float, steps: int, folder: Path) -> list[float]:
    """Run `negrl train` with the stage's config and another learning rate; its loss per step."""
    config = {**config, "outputDir": str(folder / "out"),
              "params": {**config["params"], "learningRate": lr, "maxSteps": steps, "checkpointEverySteps": 0}}
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1",
           "NEGRL_TERMINATION_LOG": str(folder / "summary.json")}
    with open(folder / "train.log", "w") as log:
        subprocess.run([sys.executable, "-m", "negrl_operator.cli", "train", "--config", str(path)],
                       stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    return [row["loss"] for row in parse_train_log((folder / "out" / TRAIN_LOG).read_text()) if "loss" in row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a finished `negrl run` of a star-graph example")
    parser.add_argument("--stage", default="sft-s{seed}", help="the SFT stage's name ({seed}: each seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 5e-4])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    for lr in args.lr:
        onsets = []
        for seed in args.seeds:
            config = json.loads((args.workdir / "configs" / f"{args.stage.format(seed=seed)}.json").read_text())
            started = time.monotonic()
            with tempfile.TemporaryDirectory() as folder:
                losses = train(config, lr, args.steps, Path(folder))
            onset = onset_step(losses)
            onsets.append(onset)
            last = losses[-WINDOW:]
            tail = sum(last) / len(last)  # a run shorter than the window has fewer
            print(f"lr={lr:g} seed={seed} onset={onset or 'none'} final_loss={tail:.3f} "
                  f"({time.monotonic() - started:.0f}s)", flush=True)
        print(f"lr={lr:g} onsets={' '.join(str(o or 'none') for o in onsets)}", flush=True)


if __name__ == "__main__":
    main()
