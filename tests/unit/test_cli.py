"""Command-line edges, as a new user meets them: every subcommand ends a missing, wrong or invalid
input in ONE line that names the path or field and the fix, with the exit code of its kind
(INPUT_ERROR 4 for paths, CONFIG_ERROR 3 for invalid configs and manifests), and reads standard
input for `-`."""

from __future__ import annotations

import io
import json
import re

import pytest
import yaml
from pydantic import ValidationError

from negrl_operator import cli
from negrl_operator.api.exit_code import CONFIG_ERROR, INPUT_ERROR, USAGE, ConfigError
from negrl_operator.api.stage_config import TrainStageConfig
from tests.fixtures.paths import REPO

pytestmark = pytest.mark.unit

STAGE_COMMANDS = ("prepare", "sample", "credit", "pairs", "evaluate", "train")
MISSING = "/nonexistent/negrl/input"


def _validation_error() -> ValidationError:
    try:
        TrainStageConfig.model_validate({"stage": "ppo", "outputDir": "o", "modelPath": "m", "data": ["d"]})
    except ValidationError as error:
        return error
    raise AssertionError("expected a validation error")


def _yaml_error() -> yaml.YAMLError:
    try:
        yaml.safe_load("a: [1,\nb")
    except yaml.YAMLError as error:
        return error
    raise AssertionError("expected a YAML error")


@pytest.mark.parametrize("error, code, pattern", [
    (FileNotFoundError(2, "No such file", "/x.jsonl"), INPUT_ERROR, r"^/x\.jsonl: no such file .*pass `-`"),
    (IsADirectoryError(21, "Is a directory", "/tmp"), INPUT_ERROR, r"^/tmp: is a folder, not a file"),
    (NotADirectoryError(20, "Not a directory", "/etc/hosts/x"), INPUT_ERROR, r"^/etc/hosts/x: a part of this path"),
    (PermissionError(13, "Permission denied", "/root/x"), INPUT_ERROR, r"^/root/x: permission denied; make it"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), INPUT_ERROR, r"^input is not UTF-8"),
    (ConfigError("m.yaml: invalid NegRLExperiment: spec.x: bad"), CONFIG_ERROR, r"^m\.yaml: invalid NegRLExperiment"),
    (_validation_error(), CONFIG_ERROR, r"^invalid TrainStageConfig: stage: Input should be 'sft', 'rft' or 'dpo'"),
    (_yaml_error(), CONFIG_ERROR, r"^not valid YAML at line 2, column 2: .*fix the syntax$"),
    (json.JSONDecodeError("Expecting value", "{\n x", 4), CONFIG_ERROR, r"^not valid JSON at line 2, column 3: Expecting value"),
])
def test_user_errors_map_to_one_line_and_a_code(error, code, pattern):
    mapped_code, line = cli.user_error(error)
    assert mapped_code == code and re.search(pattern, line) and "\n" not in line, line


@pytest.mark.parametrize("error", [KeyError("x"), RuntimeError("bug"), ValueError("bug")])
def test_other_errors_are_bugs_and_keep_their_traceback(error):
    assert cli.user_error(error) is None


def _manifest(**spec_changes) -> str:
    manifest = yaml.safe_load((REPO / "examples" / "stargraph.yaml").read_text())
    manifest["spec"].update(spec_changes)
    return yaml.safe_dump(manifest)


def _run(argv, capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


ROWS = [
    # (argv, stdin, exit code, stderr pattern)
    (["run", "-f", MISSING], "", INPUT_ERROR, rf"^negrl run: {MISSING}: no such file"),
    (["run", "-f", "/tmp"], "", INPUT_ERROR, r"^negrl run: /tmp: is a folder"),
    (["run", "-f", "-"], "kind: [", CONFIG_ERROR, r"^negrl run: <stdin>: not valid YAML at line 1"),
    (["run", "-f", "-"], "just text", CONFIG_ERROR, r"^negrl run: <stdin>: not a NegRLExperiment manifest"),
    (["run", "-f", "-"], _manifest(seeds=[1, 1], bogus=1), CONFIG_ERROR,
     r"^negrl run: <stdin>: invalid NegRLExperiment: spec.bogus: Extra inputs are not permitted"),
    (["grade", MISSING], "", INPUT_ERROR, rf"^negrl grade: {MISSING}: no such file"),
    (["grade", "/tmp"], "", INPUT_ERROR, r"^negrl grade: /tmp: is a folder"),
    (["crd", "--bogus"], "", USAGE, r"unrecognized arguments: --bogus"),
    (["operator", "--bogus"], "", USAGE, r"unrecognized arguments: --bogus"),
    *[([stage, "--config", MISSING], "", INPUT_ERROR, rf"^negrl {stage}: {MISSING}: no such file")
      for stage in STAGE_COMMANDS],
    *[([stage, "--config", "-"], "{\"kind\": ", CONFIG_ERROR, rf"^negrl {stage}: <stdin>: not valid JSON at line 1")
      for stage in STAGE_COMMANDS],
    *[([stage, "--config", "-"], json.dumps({"kind": "train", "stage": "ppo"}), CONFIG_ERROR,
       rf"^negrl {stage}: <stdin>: invalid stage config: .*stage: Input should be") for stage in STAGE_COMMANDS],
    (["train", "--config", "-"], json.dumps({"kind": "pairs", "outputDir": "o", "samplesDir": "s", "questions": "q",
                                             "outputs": ["rft"]}),
     CONFIG_ERROR, r"^negrl train: <stdin>: stage config kind 'pairs' is not 'train'$"),
    (["synthesize", "--config", MISSING], "", INPUT_ERROR, rf"^negrl synthesize: {MISSING}: no such file"),
    (["synthesize", "--config", "-"], "{\"kind\": ", CONFIG_ERROR, r"^negrl synthesize: <stdin>: not valid JSON at line 1"),
    (["synthesize", "--config", "-"], json.dumps({"kind": "train", "stage": "ppo"}), CONFIG_ERROR,
     r"^negrl synthesize: <stdin>: stage config kind 'train' is not 'synthesize'$"),
    (["synthesize", "--config", "-"], json.dumps({"kind": "synthesize", "outputDir": "o", "task": "gsm8k",
                                                  "questions": "q"}), CONFIG_ERROR,
     r"^negrl synthesize: <stdin>: invalid stage config: \(document\): Value error, set exactly one of endpoint"),
]


@pytest.mark.parametrize("argv, stdin, code, pattern", ROWS, ids=lambda value: None)
def test_every_subcommand_ends_a_bad_input_in_one_line(argv, stdin, code, pattern, capsys, monkeypatch):
    if argv[0] in {"crd", "operator"}:
        with pytest.raises(SystemExit) as exit_info:  # argparse's own exit, before any input is read
            cli.main(argv)
        assert exit_info.value.code == code
        assert re.search(pattern, capsys.readouterr().err)
        return
    got, out, err = _run(argv, capsys, monkeypatch, stdin)
    lines = err.strip().splitlines()
    assert got == code and len(lines) == 1 and re.search(pattern, lines[0]), err
    assert "Traceback" not in err
    if argv[0] in (*STAGE_COMMANDS, "synthesize"):  # also the termination message the operator shows
        assert json.loads(out.strip().splitlines()[-1]) == {"stage": argv[0], "error": lines[0].split(": ", 1)[1],
                                                            "exit_code": code}


def test_every_subcommand_has_a_row():
    assert {argv[0] for argv, *_ in ROWS} == set(cli.SUBCOMMANDS)


def test_grade_reads_standard_input_for_a_dash(capsys, monkeypatch):
    line = json.dumps({"response": "so the answer is 42", "answer": "42", "task": "gsm8k"})
    code, out, _ = _run(["grade", "-", "--workers", "1"], capsys, monkeypatch, line + "\n")
    assert code == 0
    assert json.loads(out.strip())["correct"] is True


def test_run_accepts_a_manifest_without_storage(tmp_path):
    from negrl_operator.local.runner import load_experiment

    manifest = yaml.safe_load((REPO / "examples" / "stargraph.yaml").read_text())
    manifest["spec"].pop("storage", None)
    path = tmp_path / "no-storage.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert load_experiment(path).spec.storage is None
