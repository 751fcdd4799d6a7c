"""dvc.yaml: every stage lists exactly the project code its entry point imports.

A missing code dep means a fix to that module never reruns the stage and DVC serves stale
outputs; an extra one reruns a stage (and all after it) for a change it cannot see.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.support import LAYERS, PACKAGES, module_file

ROOT = Path(__file__).resolve().parents[2]


def project_imports(path: Path) -> set[str]:
    """Project modules `path` imports, at any depth of its code (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES and module_file(n) is not None}


def has_code(path: Path) -> bool:
    """False for an empty or docstring-only file: changing it cannot change a result."""
    body = ast.parse(path.read_text()).body
    return bool(body) and not (len(body) == 1 and isinstance(body[0], ast.Expr)
                               and isinstance(body[0].value, ast.Constant))


def closure(entry: str) -> set[str]:
    """Repo-relative files of `entry`, every project module it reaches and their packages, code only."""
    seen, todo = set(), [entry]
    while todo:
        path = module_file(todo.pop())
        if path in seen:
            continue
        seen.add(path)
        todo += project_imports(path)
        parts = path.relative_to(ROOT).with_suffix("").parts
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
    return {p.relative_to(ROOT).as_posix() for p in seen if has_code(p)}


def listed_code(deps: list[str]) -> set[str]:
    """The code files a stage's deps name: files, and every code file under a listed folder."""
    files = set()
    for dep in deps:
        if dep.split("/")[0] not in PACKAGES:
            continue
        path = ROOT / dep
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files |= {p.relative_to(ROOT).as_posix() for p in found if "__pycache__" not in p.parts and has_code(p)}
    return files


def stages() -> list[tuple[str, list[str], list[str]]]:
    """(stage name, entry modules, deps) for every stage, foreach expanded to its template; a stage
    started through pipelines.launch runs both the launcher and the stage module it names."""
    out = []
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        out.append((name, re.findall(r"\bpipelines\.\w+", body["cmd"]), [str(d) for d in body["deps"]]))
    return out


@pytest.mark.parametrize("name, modules, deps", stages(), ids=[s[0] for s in stages()])
def test_stage_code_deps_equal_the_code_it_imports(name, modules, deps):
    imported, listed = set().union(*map(closure, modules)), listed_code(deps)
    assert not imported - listed, f"dvc.yaml stage {name}: add to deps {sorted(imported - listed)}"
    assert not listed - imported, f"dvc.yaml stage {name}: remove from deps {sorted(listed - imported)}"


def test_listed_deps_exist():
    for name, _, deps in stages():
        for dep in deps:
            if dep.split("/")[0] in PACKAGES:
                assert (ROOT / dep).exists(), f"dvc.yaml stage {name}: dep {dep} does not exist"


def layer_of(package: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    assert {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests", "bench"} == set(PACKAGES), \
        "a package missing from LAYERS"
    for path in sorted((ROOT / package).rglob("*.py")):
        imported = {name.split(".")[0] for name in project_imports(path)} - {package}
        upward = sorted(p for p in imported if layer_of(p) >= layer_of(package))
        assert not upward, f"{path.relative_to(ROOT)} imports {upward}: not below {package} in {LAYERS}"


def test_stage_scripts_read_settings_only_through_sections():
    """`core.params.section` is where the end-to-end test traces which params keys a stage reads
    (test_each_stage_lists_in_dvc_yaml_exactly_the_params_it_reads): a raw `params[...]` would escape it."""
    for path in sorted((ROOT / "pipelines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            raw = (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "params"
                   or isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params")
            assert not raw, f"{path.relative_to(ROOT)}:{node.lineno} reads params.yaml around core.params.section"
