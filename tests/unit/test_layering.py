"""The layering stays true: no pure-core module reaches a shell, directly or through another module.

Imports are read from the source (ast), so a shell imported inside a function counts too.
"""

import ast
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO

pytestmark = pytest.mark.unit

PACKAGE_DIRS = {"negrl_operator": "operator", "negrl_sampler": "sampler", "negrl_trainer": "trainer"}
# Shells: talking to Kubernetes or HTTP, starting processes, distributed training, and the project's
# own shell packages.
FORBIDDEN = (
    "kopf", "kubernetes", "httpx", "subprocess", "multiprocessing", "torch.distributed", "deepspeed",
    "negrl_operator.controller", "negrl_operator.local", "negrl_sampler.serving", "negrl_sampler.stages",
)
PURE_CORE = (
    "negrl_operator.api.exit_code", "negrl_operator.api.experiment", "negrl_operator.api.stage_config", "negrl_operator.api.status",
    "negrl_operator.api.crd", "negrl_operator.api.artifact", "negrl_operator.api.termination",
    "negrl_operator.api.progress", "negrl_operator.api.pretrain", "negrl_operator.api.teacher", "negrl_operator.api.resource",
    "negrl_operator.reconcile.graph", "negrl_operator.reconcile.plan", "negrl_operator.reconcile.manifest",
    "negrl_operator.reconcile.serving", "negrl_operator.reconcile.observation",
    "negrl_operator.reconcile.result", "negrl_operator.reconcile.condition", "negrl_operator.reconcile.cleanup",
    "negrl_operator.reconcile.storage",
    "negrl_operator.report.estimate", "negrl_operator.report.table", "negrl_operator.report.diagnostics",
    "negrl_sampler.step", "negrl_sampler.credit", "negrl_sampler.pairing", "negrl_sampler.record",
    "negrl_sampler.dataset", "negrl_sampler.stargraph", "negrl_sampler.simulated_policy",
    "negrl_sampler.grading.answer", "negrl_sampler.grading.number", "negrl_sampler.grading.latex",
    "negrl_sampler.grading.equivalence",
    "negrl_trainer.loss", "negrl_trainer.objective", "negrl_trainer.batch", "negrl_trainer.rank",
)


def module_file(module: str, dirs: dict[str, Path]) -> Path | None:
    top, *rest = module.split(".")
    if top not in dirs:
        return None
    base = dirs[top].joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every module an import statement in `path` names, with `from a import b` read as a.b too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def shell_chain(module: str, dirs: dict[str, Path], forbidden=FORBIDDEN) -> list[str] | None:
    """The import chain from `module` to the first forbidden module it reaches, or None."""
    def is_forbidden(name: str) -> bool:
        return any(name == f or name.startswith(f + ".") for f in forbidden)

    seen, stack = set(), [[module]]
    while stack:
        chain = stack.pop()
        path = module_file(chain[-1], dirs)
        if path is None or path in seen:
            continue
        seen.add(path)
        for name in sorted(imported_names(path)):
            if is_forbidden(name):
                return [*chain, name]
            if module_file(name, dirs) is not None:
                stack.append([*chain, name])
    return None


REPO_DIRS = {package: REPO / folder for package, folder in PACKAGE_DIRS.items()}


@pytest.mark.parametrize("module", PURE_CORE)
def test_pure_core_reaches_no_shell(module):
    assert module_file(module, REPO_DIRS) is not None, f"{module} is listed as pure core but does not exist"
    chain = shell_chain(module, REPO_DIRS)
    assert chain is None, "pure-core import chain reaches a shell: " + " -> ".join(chain)


@pytest.mark.parametrize("source, expected", [
    ("import subprocess\n", ["pkg.core", "subprocess"]),
    ("def f():\n    import kopf\n", ["pkg.core", "kopf"]),
    ("from pkg import helper\n", ["pkg.core", "pkg.helper", "httpx"]),
    ("from torch.distributed import barrier\n", ["pkg.core", "torch.distributed"]),
    ("import torch\nimport json\n", None),
])
def test_checker_finds_direct_nested_and_indirect_shell_imports(tmp_path, source, expected):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "core.py").write_text(source)
    (tmp_path / "pkg" / "helper.py").write_text("import httpx\n")
    assert shell_chain("pkg.core", {"pkg": tmp_path / "pkg"}) == expected


def test_every_subpackage_says_what_it_owns_and_may_import():
    for folder in PACKAGE_DIRS.values():
        for init in (REPO / folder).glob("*/__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            assert "Imports:" in doc, f"{init.relative_to(REPO)} must say what it may import"
