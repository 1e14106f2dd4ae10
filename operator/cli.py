"""The `negrl` command: one entry point whose subcommands import their component lazily.

The operator image has no torch, so nothing here may import a worker module at load time.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module that owns it, one-line help). Each module exposes main(argv) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("negrl_operator.local.runner", "run an experiment manifest on this machine"),
    "operator": ("negrl_operator.controller.shell", "run the Kubernetes operator"),
    "crd": ("negrl_operator.api.crd", "print the NegRLExperiment CustomResourceDefinition"),
    "prepare": ("negrl_sampler.stages.prepare", "stage: write the train and test questions files"),
    "grade": ("negrl_sampler.grading.command", "grade JSONL responses against references"),
    "sample": ("negrl_sampler.stages.sample", "stage: sample M responses per question and grade them"),
    "credit": ("negrl_sampler.stages.credit", "stage: Monte-Carlo per-step credit and first pits"),
    "pairs": ("negrl_sampler.stages.pairs", "stage: RFT set, per-step and outcome DPO pairs"),
    "evaluate": ("negrl_sampler.stages.evaluate", "stage: greedy pass@1 and sampled pass@k"),
    "train": ("negrl_trainer.train_command", "stage: SFT, RFT or DPO training on DeepSpeed"),
}


def usage() -> str:
    lines = ["usage: negrl <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"negrl: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
