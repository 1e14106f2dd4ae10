"""Examples in the docs cannot rot: every fenced code block of docs/ and the README is checked.

- YAML: a snippet include (`--8<--`) names a file under examples/ (those are tested by test_examples.py);
  a whole NegRLExperiment, or a `spec:` fragment merged into examples/gsm8k.yaml, is validated by the
  pydantic spec (cross-field rules included) and by the committed CRD's OpenAPI schema, unknown fields
  refused as the API server refuses them. Any other YAML block fails: include it or teach this test.
- Shell (bash, sh, console): every `negrl` command parses with its subcommand's own parser, every `make`
  target exists in the Makefile, every `helm --set` key exists in the chart's values schema, and every
  path under examples/, charts/, crds/, bench/ or docs/ that a command names exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from negrl_operator.api.experiment import NegRLExperiment
from tools.docs.command_page import parsers

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
BASE_EXAMPLE = REPO / "examples" / "gsm8k.yaml"
SHELLS = {"bash", "sh", "shell", "console"}
CHECKED_DIRS = ("examples/", "charts/", "crds/", "bench/", "docs/")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w-]*)")


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number) of every fenced block, indented ones (inside admonitions) too."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, language = opening.groups()
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == fence), len(lines))
        body = "\n".join(line[len(indent):] for line in lines[index + 1:end])
        blocks.append((language.lower(), body, index + 1))
        index = end + 1
    return blocks


def blocks_of(languages: set[str]) -> list:
    found = []
    for path in DOCS:
        for language, body, line in code_blocks(path.read_text()):
            if language in languages:
                found.append(pytest.param(body, id=f"{path.relative_to(REPO)}:{line}"))
    return found


def test_code_blocks_finds_indented_fences_and_languages():
    text = "a\n```bash\nmake demo\n```\n??? example\n\n    ```yaml\n    spec: {}\n    ```\n```\nplain\n```\n"
    assert code_blocks(text) == [("bash", "make demo", 2), ("yaml", "spec: {}", 7), ("", "plain", 10)]


# --- manifests --------------------------------------------------------------------------------------

def openapi_to_jsonschema(node):
    """The CRD's structural OpenAPI v3 schema as JSON Schema draft 4 (whose boolean exclusiveMinimum is
    OpenAPI 3.0's): nullable as a null type, int-or-string as a union, and no unknown fields in an
    object that lists its properties (kubectl's strict field validation)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_jsonschema(val) for key, val in node.items() if not key.startswith("x-kubernetes")}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.Draft4Validator:
    crd = yaml.safe_load((REPO / "crds" / "negrl.io_negrlexperiments.yaml").read_text())
    schema = openapi_to_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft4Validator(schema)


def merged(base, fragment):
    if isinstance(base, dict) and isinstance(fragment, dict):
        return {**base, **{key: merged(base.get(key), val) for key, val in fragment.items()}}
    return fragment


def manifest_of(body: str) -> dict:
    document = yaml.safe_load(body)
    if isinstance(document, dict) and document.get("kind") == "NegRLExperiment":
        return document
    if isinstance(document, dict) and set(document) == {"spec"}:
        return merged(yaml.safe_load(BASE_EXAMPLE.read_text()), document)
    raise AssertionError("a YAML block that is neither a NegRLExperiment nor a `spec:` fragment: include it "
                         "from examples/ with --8<-- or teach tests/unit/test_docs_examples.py to check it")


def validate(manifest: dict, validator: jsonschema.Draft4Validator) -> None:
    NegRLExperiment.model_validate(manifest)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("body", blocks_of({"yaml", "yml"}))
def test_yaml_block_is_a_valid_manifest_or_an_included_example(body, crd_validator):
    included = re.findall(r'--8<--\s+"([^"]+)"', body)
    if included:
        assert all(path.startswith("examples/") and (REPO / path).is_file() for path in included), included
        return
    validate(manifest_of(body), crd_validator)


@pytest.mark.parametrize("fragment, problem", [
    ("spec:\n  trainer: {gpusPerNode: -1}", "gpusPerNode"),
    ("spec:\n  trainer: {gpusPerNod: 8}", "gpusPerNod"),
    ("spec:\n  stages: {stepDpo: {enabled: true}, credit: {enabled: false}}", "stepDpo needs credit"),
    ("spec:\n  scheduling: {trainer: {queueName: Not_A_Name}}", "queueName"),
])
def test_a_wrong_manifest_in_the_docs_would_fail(fragment, problem, crd_validator):
    with pytest.raises(Exception, match=problem):
        validate(manifest_of(fragment), crd_validator)


def test_a_block_that_is_no_manifest_fails():
    with pytest.raises(AssertionError, match="neither a NegRLExperiment nor a `spec:` fragment"):
        manifest_of("image: {tag: x}")


# --- commands ---------------------------------------------------------------------------------------

def commands(body: str) -> list[list[str]]:
    """The simple commands of a shell block: continuation lines joined, comments, pipes, `&&`, `;` and
    redirections (with their target) taken out, a leading `$ ` prompt dropped."""
    text = re.sub(r"\\\n", " ", body)
    found = []
    for line in text.splitlines():
        line = re.sub(r"^\s*\$ ", "", line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        current, skip_next = [], False
        for token in lexer:
            if skip_next:
                skip_next = False
            elif token in {"<", ">", ">>", "2>", "2>&1"}:
                skip_next = token != "2>&1"
            elif token in {"|", "&&", "||", ";", "&"}:
                found.append(current)
                current = []
            else:
                current.append(token)
        found.append(current)
    return [command for command in found if command]


def test_commands_split_a_shell_block():
    body = ("# a comment\n$ negrl grade - < answers.jsonl\nmake demo | tee demo.log && make docs  # why\n"
            "helm install negrl charts/negrl \\\n  --set image.tag=0.1.0\n")
    assert commands(body) == [["negrl", "grade", "-"], ["make", "demo"], ["tee", "demo.log"], ["make", "docs"],
                              ["helm", "install", "negrl", "charts/negrl", "--set", "image.tag=0.1.0"]]


@pytest.fixture(scope="module")
def negrl_parsers():
    found = parsers()
    for parser in found.values():
        parser.exit_on_error = False

        def refuse(message, prog=parser.prog):
            raise ValueError(f"{prog}: {message}")

        parser.error = refuse
    return found


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))


def values_keys() -> set[str]:
    import json

    schema = json.loads((REPO / "charts" / "negrl" / "values.schema.json").read_text())

    def walk(node: dict, prefix: str) -> set[str]:
        node = schema["definitions"][node["$ref"].split("/")[-1]] if "$ref" in node else node
        keys = {prefix.rstrip(".")} if prefix else set()
        for name, sub in node.get("properties", {}).items():
            keys |= walk(sub, f"{prefix}{name}.")
        return keys

    return walk(schema, "")


def check_command(command: list[str], negrl_parsers) -> None:
    program = Path(command[0]).name
    for token in command[1:]:
        path = token.split("=", 1)[-1]
        if path.startswith(CHECKED_DIRS):
            assert (REPO / path).exists(), f"{' '.join(command)}: {path} does not exist"
    if program == "negrl":
        assert len(command) > 1 and command[1] in negrl_parsers, f"no negrl subcommand in {command}"
        negrl_parsers[command[1]].parse_args(command[2:])
    elif program == "make":
        targets = [arg for arg in command[1:] if "=" not in arg and not arg.startswith("-")]
        assert set(targets) <= make_targets(), f"{' '.join(command)}: no such Makefile target"
    elif program == "helm":
        sets = [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == "--set"]
        unknown = [item.split("=")[0] for item in sets if item.split("=")[0] not in values_keys()]
        assert not unknown, f"{' '.join(command)}: no chart value {unknown}"


@pytest.mark.parametrize("body", blocks_of(SHELLS))
def test_shell_block_commands_match_the_code(body, negrl_parsers):
    for command in commands(body):
        check_command(command, negrl_parsers)


@pytest.mark.parametrize("command, problem", [
    ("negrl run -f x.yaml --file-name y.yaml", "unrecognized arguments: --file-name"),
    ("negrl run", "required: -f/--file"),
    ("negrl launch -f x", "no negrl subcommand"),
    ("negrl run -f examples/nope.yaml", "does not exist"),
    ("make dcos", "no such Makefile target"),
    ("helm install negrl charts/negrl --set operator.replica=3", "no chart value"),
])
def test_a_wrong_command_in_the_docs_would_fail(command, problem, negrl_parsers):
    with pytest.raises((AssertionError, ValueError), match=problem):
        check_command(shlex.split(command), negrl_parsers)


def test_the_readme_links_point_at_existing_files():
    """The README is not part of the site (mkdocs checks the site's links): its own links are checked here."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text())
    local = [target for target in targets if "://" not in target]
    assert len(local) >= 10 and [target for target in local if not (REPO / target).is_file()] == []
