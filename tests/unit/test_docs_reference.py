"""The generated docs pages (tools/docs/): the committed reference pages equal what the code generates
now (else: `make docs-reference`), the API page lists every field of the spec and status models, the
values and command pages every chart value and flag, and the troubleshooting page has an entry for
every reason the operator can write into a status. Tables over the generators' pure parts."""

from __future__ import annotations

import argparse
import ast
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from negrl_operator.api.experiment import ExperimentSpec
from negrl_operator.api.status import ExperimentStatus
from tools.docs import api_page, command_page, reference, result, status_reason, values_page
from tools.docs.markdown import cell, value

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return reference.generated()


@pytest.mark.parametrize("page", sorted(reference.PAGES))
def test_committed_reference_page_is_current(page, pages):
    committed = (REPO / page).read_text() if (REPO / page).is_file() else ""
    assert committed == pages[page], f"{page} is stale: run `{reference.REGENERATE}` and commit the result"


def model_paths(model: type[BaseModel], prefix: str) -> set[str]:
    """Every field of a pydantic model tree by its dotted camelCase path (lists of objects as `x[]`),
    walked from the models themselves, independently of the page generator."""
    paths = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        paths.add(path)
        annotation = field.annotation
        is_list = any(typing.get_origin(arg) is list for arg in (annotation, *typing.get_args(annotation)))
        for sub in _models(annotation):
            paths |= model_paths(sub, path + ("[]" if is_list else ""))
    return paths


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


def documented_paths(page: str) -> set[str]:
    """(section path + field) of every table row under a `### `path`` heading of the API page."""
    paths, section = set(), None
    for line in page.splitlines():
        heading = re.match(r"^### `([^`]+)`", line)
        if heading:
            section = heading.group(1)
        row = re.match(r"^\| \[?`([A-Za-z0-9]+)`", line)
        if row and section and not line.startswith("| Field"):
            paths.add(f"{section}.{row.group(1)}")
    return paths


def test_the_api_page_lists_every_spec_and_status_field(pages):
    expected = model_paths(ExperimentSpec, "spec") | model_paths(ExperimentStatus, "status")
    assert len(expected) > 150  # the walk reaches nested objects and lists of objects
    documented = documented_paths(pages[api_page.PAGE])
    assert sorted(expected - documented) == [] and sorted(documented - expected) == []


def test_a_field_added_without_regenerating_makes_the_page_stale(tmp_path):
    definition = api_page.generated_crd()
    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / api_page.PAGE).write_text(api_page.api_page(definition))
    spec = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["newKnob"] = {"type": "integer", "default": 3, "minimum": 1, "description": "A new knob."}
    regenerated = api_page.api_page(definition)
    assert "| `newKnob` | `integer` | `3` | &gt;= 1 | A new knob. |" in regenerated
    assert reference.stale_pages({api_page.PAGE: regenerated}, tmp_path) == [api_page.PAGE]
    assert reference.stale_pages({"docs/reference/missing.md": "x"}, tmp_path) == ["docs/reference/missing.md"]
    (tmp_path / api_page.PAGE).write_text(regenerated)
    assert reference.stale_pages({api_page.PAGE: regenerated}, tmp_path) == []


def test_check_names_the_regenerate_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(reference, "REPO", tmp_path)
    monkeypatch.setattr(reference, "PAGES", {"docs/reference/x.md": lambda: "new\n"})
    assert reference.main(["--check"]) == 1
    assert "stale reference pages (run `make docs-reference`): docs/reference/x.md" in capsys.readouterr().err
    assert reference.main(["--write", "--check"]) == 0
    assert (tmp_path / "docs/reference/x.md").read_text() == "new\n"


@pytest.mark.parametrize("node, expected", [
    ({"type": "string"}, "string"),
    ({"type": "array", "items": {"type": "integer"}}, "[]integer"),
    ({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": True}}, "map[string]int-or-string"),
    ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, "object (free-form)"),
    ({"type": "object", "properties": {"a": {"type": "string"}}}, "object"),
    ({"type": "array", "items": {"type": "object", "properties": {}}}, "[]object"),
])
def test_type_name(node, expected):
    assert api_page.type_name(node) == expected


@pytest.mark.parametrize("node, required, expected", [
    ({"type": "integer", "minimum": 1, "maximum": 64}, False, [">= 1", "<= 64"]),
    ({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}, True, ["required", "> 0", "<= 1"]),
    ({"type": "string", "enum": ["Job", "JobSet"]}, False, ["one of `Job`, `JobSet`"]),
    ({"type": "string", "minLength": 1, "pattern": "^/"}, False, ["length >= 1", "pattern `^/`"]),
    ({"type": "array", "items": {"type": "integer", "minimum": 2}, "maxItems": 16, "x-kubernetes-list-type": "set"},
     False, ["at most 16 items", "distinct items", "each: >= 2"]),
    ({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
      "items": {"type": "object", "properties": {}}}, False, ["items keyed by `name`"]),
    ({"type": "string", "x-kubernetes-validations": [{"rule": "r", "message": "must be a name"}]}, False,
     ["must be a name"]),
    ({"type": "object", "properties": {}, "x-kubernetes-validations": [{"rule": "r", "message": "in its section"}]},
     False, []),
])
def test_constraints(node, required, expected):
    assert api_page.constraints(node, required) == expected


@pytest.mark.parametrize("path, expected", [
    ("spec", "spec"), ("spec.stages.stepDpo", "spec-stages-stepdpo"),
    ("spec.scheduling.sampler.tolerations[]", "spec-scheduling-sampler-tolerations"),
])
def test_anchor(path, expected):
    assert api_page.anchor(path) == expected


@pytest.mark.parametrize("text, expected", [
    ("|D_syn| sweep", r"\|D\_syn\| sweep"),
    ("goes to <mountPath>/<path>", "goes to &lt;mountPath&gt;/&lt;path&gt;"),
    ("use `a|b_c` then k*n", r"use `a|b_c` then k\*n"),
    ("two\n  lines", "two lines"),
    ("an `unbalanced tick", "an 'unbalanced tick"),
])
def test_cell(text, expected):
    assert cell(text) == expected


@pytest.mark.parametrize("item, expected", [(None, ""), (0, "`0`"), ("FailFast", '`"FailFast"`'),
                                            ([0], "`[0]`"), ({"a": 1}, '`{"a": 1}`')])
def test_value(item, expected):
    assert value(item) == expected


def test_key_comments_attach_the_block_directly_above_a_key():
    text = ("# header, not a key's\n\nimage:\n  # The repository.\n  # Second line.\n  repository: x\n"
            "  tag: \"\"\noperator:\n  leaderElection:\n    # Lease.\n    enabled: true\n  # Workers.\n  workers: 8\n")
    assert values_page.key_comments(text) == {
        "image.repository": "The repository. Second line.", "operator.leaderElection.enabled": "Lease.",
        "operator.workers": "Workers.",
    }


def test_the_values_page_lists_every_key_of_the_schema_and_of_values_yaml(pages):
    import json

    import yaml

    schema = json.loads((values_page.CHART / "values.schema.json").read_text())
    definitions = schema["definitions"]

    def leaves(node: dict, defaults, prefix: str) -> set[str]:
        node = values_page.resolve(node, definitions)
        if node.get("type") == "object" and "properties" in node:
            found = set()
            for name, sub in node["properties"].items():
                found |= leaves(sub, (defaults or {}).get(name), f"{prefix}{name}.")
            return found
        return {prefix.rstrip(".")}

    expected = leaves(schema, yaml.safe_load((values_page.CHART / "values.yaml").read_text()), "")
    documented = set(re.findall(r"^\| `([A-Za-z0-9.]+)` \|", pages[values_page.PAGE], re.M))
    assert "operator.leaderElection.leaseDurationSeconds" in expected and expected <= documented
    assert "| `operator.replicas` | `integer` | `2` | &gt;= 1; &lt;= 5 | Replicas of the operator;" in pages[values_page.PAGE]


def test_the_command_page_lists_every_subcommand_and_option(pages):
    from negrl_operator.cli import SUBCOMMANDS

    page = pages[command_page.PAGE]
    parsers = command_page.parsers()
    assert list(parsers) == list(SUBCOMMANDS)
    for name, parser in parsers.items():
        section = page.split(f"## `negrl {name}`")[1].split("\n## ")[0]
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                shown = action.option_strings[-1] if action.option_strings else action.dest
                assert f"`{shown}`" in section, f"negrl {name}: {shown} missing"


@pytest.mark.parametrize("argv, expected", [
    (["-f", "FILE"], ["`-f`, `--file`", "`FILE`", "required", "the manifest"]),
    (["--workers"], ["`--workers`", "`WORKERS` (int)", "`8`", "reconciles"]),
    (["--stall-after"], ["`--stall-after`", "`STALL_AFTER` (float)", "`0.0`", ""]),
    (["--backend"], ["`--backend`", "`auto` \\| `vllm`", "", ""]),
    (["--verbose"], ["`--verbose`", "", "", ""]),
    (["--namespace"], ["`--namespace`", "`NAMESPACE`", "", "(repeatable)"]),
])
def test_option_row(argv, expected):
    parser = argparse.ArgumentParser()
    parser.add_argument("-f", "--file", required=True, help="the manifest")
    parser.add_argument("--workers", type=int, default=8, help="reconciles")
    parser.add_argument("--stall-after", type=float, default=0.0)
    parser.add_argument("--backend", choices=["auto", "vllm"], default=None)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--namespace", action="append", default=[])
    action = next(a for a in parser._actions if a.option_strings[:1] == argv[:1])
    row = command_page.option_row(action)
    assert [row[0], row[1][: len(expected[1])], row[2]] == expected[:3] and expected[3] in row[3]


def reasons_of(source: str) -> set[str]:
    tree = ast.parse(source)
    constants = status_reason.module_constants(tree)
    return set().union(*(status_reason._strings(e, constants) for e in status_reason.reason_expressions(tree)))


@pytest.mark.parametrize("source, expected", [
    ('Problem("OOMKilled", "out of memory")', {"OOMKilled"}),
    ('StorageCheck("False", "ClaimNotFound", "gone")', {"ClaimNotFound"}),
    ('GROUP = "GroupRestart"\n_reasoned(stage, GROUP, "", now)', {"GroupRestart"}),
    ('x = {"state": "Failed", "reason": "JobFailed"}', {"JobFailed"}),
    ('STUCK = ("ImagePullBackOff", "ErrImagePull")\nif w.get("reason") in STUCK: pass', {"ImagePullBackOff", "ErrImagePull"}),
    ('if new.reason == "SamplerNotReady": pass', {"SamplerNotReady"}),
    ('degraded_reason = "StageFailed" if f else "AsExpected"', {"StageFailed", "AsExpected"}),
    ('A, B = "InvalidSpec", "ApplyRetrying"\nreport(runtime, body, B, message)', {"ApplyRetrying"}),
    ('if job.failure_reason == "BackoffLimitExceeded": pass', set()),  # a Job's reason, not the status's
    ('EventRecord("Normal", "StageStarted", "started")', set()),  # Events are not status
    ('Problem(waiting["reason"], "lower-case keys are not reasons")', set()),
])
def test_reason_positions(source, expected):
    assert reasons_of(source) == expected


def test_the_troubleshooting_page_has_an_entry_for_every_status_reason():
    reasons = status_reason.status_reasons()
    assert {"ImagePullBackOff", "Unschedulable", "SamplerNotReady", "InvalidSpec", "StorageNotShared",
            "GroupRestart", "Queued", "OOMKilled", "Succeeded"} <= reasons
    page = (REPO / "docs" / "troubleshooting.md").read_text()
    entries = set(re.findall(r"^### `(\w+)`", page, re.M)) | set(re.findall(r"^\| `(\w+)` \|", page, re.M))
    missing = sorted(reasons - entries)
    assert missing == [], f"docs/troubleshooting.md has no entry for the status reasons {missing}: add one each"


@pytest.mark.parametrize("report, expected", [
    ("![a](accuracy_vs_dsyn.png)\ntext\n![b](training_curves.png)\n", ["accuracy_vs_dsyn.png", "training_curves.png"]),
    ("![a](x.png) ![a again](x.png)", ["x.png"]),
    ("![web](https://example.org/x.png) ![abs](/etc/x.png) [link](y.png)", []),
])
def test_report_images(report, expected):
    assert result.report_images(report) == expected


def test_copy_report_copies_the_report_and_its_plots_and_writes_a_page_that_includes_it(tmp_path):
    run = tmp_path / "runs" / "arithmetic"
    run.mkdir(parents=True)
    (run / "report.md").write_text("# NegRL run: arithmetic\n\n![accuracy vs |D_syn|](accuracy_vs_dsyn.png)\n")
    (run / "accuracy_vs_dsyn.png").write_bytes(b"\x89PNG")
    target = tmp_path / "docs" / "results" / "arithmetic"
    written = result.copy_report(run, target, repo=tmp_path)
    assert [path.name for path in written] == ["report.md", "accuracy_vs_dsyn.png", "index.md"]
    assert (target / "accuracy_vs_dsyn.png").read_bytes() == b"\x89PNG"
    assert (target / "report.md").read_text() == (run / "report.md").read_text()
    page = (target / "index.md").read_text()
    assert page.endswith('--8<-- "docs/results/arithmetic/report.md"\n') and "make docs-results RUN=arithmetic" in page


@pytest.mark.parametrize("files, message", [
    ({}, "no report; finish the run first"),
    ({"report.md": "![p](missing.png)"}, "the report shows this image but the run has no such file"),
])
def test_copy_report_refuses_an_unfinished_run(tmp_path, files, message):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    for name, text in files.items():
        (run / name).write_text(text)
    with pytest.raises(FileNotFoundError, match=message):
        result.copy_report(run, tmp_path / "docs" / "results" / "x", repo=tmp_path)
