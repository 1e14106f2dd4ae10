"""The `negrl` command: one entry point whose subcommands import their component lazily.

The operator image has no torch, so nothing here may import a worker module at load time. Errors a
user can fix (a missing or unreadable path, an invalid config or manifest) are mapped here, once, to
one line naming the path or field and the fix, and to an exit code of `exit_code`; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import json
import sys

import yaml
from pydantic import ValidationError

from negrl_operator.api.exit_code import CONFIG_ERROR, INPUT_ERROR, USAGE, ConfigError
from negrl_operator.api.stage_config import validation_problems

# subcommand -> (module that owns it, one-line help). Each module exposes main(argv) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("negrl_operator.local.runner", "run an experiment manifest on this machine"),
    "operator": ("negrl_operator.controller.shell", "run the Kubernetes operator"),
    "crd": ("negrl_operator.api.crd", "print the NegRLExperiment CustomResourceDefinition"),
    "prepare": ("negrl_sampler.stages.prepare", "stage: write the train and test questions files"),
    "grade": ("negrl_sampler.grading.command", "grade JSONL responses against references"),
    "synthesize": ("negrl_sampler.stages.synthesize", "stage: D_syn from a teacher, verified and de-duplicated"),
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


# Stage commands also leave the error as their termination message (the operator shows it).
STAGES = {"prepare", "synthesize", "sample", "credit", "pairs", "evaluate", "train"}


def _input_error(error: OSError) -> str:
    path = error.filename or "<stdin>"
    if isinstance(error, IsADirectoryError):
        return f"{path}: is a folder, not a file; pass a file (or `-` for standard input)"
    if isinstance(error, NotADirectoryError):
        return f"{path}: a part of this path is a file, not a folder; check the path"
    if isinstance(error, FileNotFoundError):
        return f"{path}: no such file or folder; check the path (or pass `-` to read standard input)"
    return f"{path}: permission denied; make it readable (and its folder writable) by this user"


def user_error(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an error the user can fix; None for anything else (a bug)."""
    if isinstance(error, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        return INPUT_ERROR, _input_error(error)
    if isinstance(error, UnicodeDecodeError):
        return INPUT_ERROR, f"input is not UTF-8 text ({error.reason} at byte {error.start}); pass a text file"
    if isinstance(error, ConfigError):
        return CONFIG_ERROR, str(error)
    if isinstance(error, ValidationError):
        return CONFIG_ERROR, f"invalid {error.title}: {validation_problems(error)}; fix the fields named"
    if isinstance(error, yaml.YAMLError):
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return CONFIG_ERROR, f"not valid YAML{where}: {getattr(error, 'problem', None) or error}; fix the syntax"
    if isinstance(error, json.JSONDecodeError):
        return CONFIG_ERROR, f"not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}; fix the syntax"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"negrl: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return USAGE
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except Exception as error:  # the one boundary where user errors become a line and an exit code
        mapped = user_error(error)
        if mapped is None:
            raise
        code, line = mapped
        print(f"negrl {name}: {line}", file=sys.stderr)
        if name in STAGES:
            from negrl_operator.api.termination import report_summary

            report_summary({"stage": name, "error": line, "exit_code": code})
        return code


if __name__ == "__main__":
    sys.exit(main())
