"""No container engine exists on the build machines, so the Dockerfile's structure is checked here."""

import json
import re

import pytest

from negrl_operator.cli import SUBCOMMANDS
from negrl_operator.reconcile.graph import NodeKind
from tests.fixtures.paths import REPO


def stages() -> dict[str, list[tuple[str, str]]]:
    """target name -> its instructions (keyword, rest), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    result, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            current = rest.split(" AS ")[-1].strip()
            result[current] = []
        if current:
            result[current].append((keyword.upper(), rest))
    return result


def last(instructions, keyword):
    values = [rest for key, rest in instructions if key == keyword]
    return values[-1] if values else None


@pytest.mark.parametrize("target", ["operator", "worker"])
def test_target_runs_negrl_as_non_root(target):
    instructions = stages()[target]
    user = last(instructions, "USER")
    assert user is not None and user.split(":")[0] not in {"0", "root"}
    assert json.loads(last(instructions, "ENTRYPOINT")) == ["negrl"]
    command = json.loads(last(instructions, "CMD"))
    assert command[0] in SUBCOMMANDS or command == ["--help"]
    assert any(key == "LABEL" and "org.opencontainers.image.title" in rest for key, rest in instructions)


def test_operator_image_has_no_torch_and_worker_has_the_stage_commands():
    all_stages = stages()
    operator_installs = " ".join(rest for key, rest in all_stages["operator"] if key == "RUN")
    worker_installs = " ".join(rest for key, rest in all_stages["worker"] if key == "RUN")
    assert ".[operator]" in operator_installs and "worker" not in operator_installs
    assert ".[worker,tracking]" in worker_installs  # the MLflow client only where stages run
    assert "tracking" not in operator_installs


def test_base_image_is_pinned():
    text = (REPO / "Dockerfile").read_text()
    image = re.search(r"ARG PYTHON_IMAGE=(\S+)", text).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image)


def test_every_stage_kind_is_a_negrl_subcommand():
    # the operator's Jobs run `negrl <node kind>` in the worker image
    assert set(NodeKind.__args__) <= set(SUBCOMMANDS)


def test_packaged_modules_match_the_folders():
    # the images install the project non-editable (`pip install .`): a listed package that does not
    # exist fails the build, and an unlisted one is missing from the image
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = setuptools["package-dir"]
    folders = {
        ".".join([package, *path.parent.relative_to(REPO / folder).parts])
        for package, folder in roots.items() for path in (REPO / folder).rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == folders


@pytest.mark.parametrize("target", ["operator", "worker", "sampler-cpu"])
def test_no_source_folder_is_left_in_the_working_directory(target):
    # `python -m` puts the working directory first on sys.path: an `operator/` folder there breaks
    # the standard library for torchrun's workers and for vLLM
    instructions = stages()[target]
    copied = [rest.split()[-1].rstrip("/") for key, rest in instructions if key == "COPY" and rest.split()[0].endswith("/")]
    removed = " ".join(rest for key, rest in instructions if key == "RUN" and "rm -rf" in rest)
    assert all(f" {folder}" in removed for folder in copied), (copied, removed)
