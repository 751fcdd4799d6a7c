"""dvc.yaml: every stage lists, among its deps, all project code its entry point imports.

A missing code dep means a fix to that module never reruns the stage, and DVC serves stale outputs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("augment", "detection", "pipelines")


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_imports(path: Path) -> set[str]:
    """Project modules `path` imports directly (absolute imports of augment / detection / pipelines)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES and module_file(n) is not None}


def closure(entry: str) -> set[Path]:
    """Files of `entry` and every project module it reaches, without the empty package __init__s."""
    seen, todo = set(), [entry]
    while todo:
        path = module_file(todo.pop())
        if path in seen:
            continue
        seen.add(path)
        todo += project_imports(path)
        parts = path.relative_to(ROOT).parts
        todo += [".".join(parts[:i]) for i in range(1, len(parts) - 1)]  # parent packages run first
    return {p for p in seen if p.read_text().strip()}


def stages() -> list[tuple[str, str, list[str]]]:
    """(stage name, entry module, deps) for every stage, foreach expanded to its first item."""
    out = []
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        module = re.search(r"-m (pipelines\.\w+)", body["cmd"]).group(1)
        out.append((name, module, [str(d) for d in body["deps"]]))
    return out


@pytest.mark.parametrize("name, module, deps", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_cover_the_code_it_imports(name, module, deps):
    missing = []
    for path in sorted(closure(module)):
        rel = path.relative_to(ROOT).as_posix()
        if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps):
            missing.append(rel)
    assert not missing, f"dvc.yaml stage {name}: add to deps {missing}"
