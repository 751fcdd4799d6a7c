"""Names the code and the docs point a reader to exist: every `package.module[.name]` and every
`package/file.py` in the library, the stage scripts, bench/, the README, docs/ and the two YAML files.
(bench/RESULTS.md is a dated log and keeps the names of its day.)"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from tests.support import PACKAGES, module_file

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(rf"\b((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)")
FILE = re.compile(rf"\b((?:{'|'.join(PACKAGES)}|tests|bench)/[\w/]*\w\.(?:py|sh|yaml))\b")


def read_by_people() -> list[Path]:
    files = [*(p for package in (*PACKAGES, "bench") for p in (ROOT / package).rglob("*.py")),
             ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "params.yaml", ROOT / "dvc.yaml"]
    return sorted(p for p in files if "__pycache__" not in p.parts)


@cache
def defined(path: Path) -> set[str]:
    """Names a module defines at its top level (what it imports does not count)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def stale(reference: str) -> str | None:
    parts = reference.split(".")
    known = next((k for k in range(len(parts), 0, -1) if module_file(".".join(parts[:k]))), 0)
    if not known:
        return "no such module"
    module, rest = module_file(".".join(parts[:known])), parts[known:]
    if rest and rest[0] not in defined(module):
        return f"{'.'.join(parts[:known])} defines no {rest[0]}"
    return None


def test_every_module_and_name_referred_to_exists():
    found = []
    for path in read_by_people():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for reference in DOTTED.findall(line):
                why = stale(reference)
                if why:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {reference}: {why}")
            for name in FILE.findall(line):
                if not (ROOT / name).exists():
                    found.append(f"{path.relative_to(ROOT)}:{number}: {name}: no such file")
    assert not found, "\n".join(found)
