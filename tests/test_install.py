"""The install is pinned: constraints.txt fixes one version of every package, inside the ranges
pyproject.toml states, and this environment runs those versions (as `make install` and CI make it)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert match, f"constraints.txt: {line!r} is not `name==version`"
            found[canonicalize_name(match[1])] = match[2]
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_dependency_is_pinned_inside_its_range():
    pinned = pins()
    for requirement in requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"constraints.txt: no pin for {requirement.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), \
            f"constraints.txt: {requirement.name}=={pinned[name]} is outside pyproject.toml's {requirement.specifier}"


def test_ultralytics_has_an_upper_bound_while_its_internals_are_patched():
    (ultralytics,) = [r for r in requirements() if r.name.startswith("ultralytics")]
    assert any(spec.operator == "<" for spec in ultralytics.specifier)


def test_this_environment_runs_the_pinned_versions():
    pinned = pins()
    for requirement in requirements():
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            raise AssertionError(f"{requirement.name} is not installed: run `make install`") from None
        expected = pinned[canonicalize_name(requirement.name)]
        # a local build label (torch 2.14.1+cpu from PyTorch's CPU index) is the same release
        assert installed.split("+")[0] == expected.split("+")[0], \
            f"{requirement.name} {installed} installed, constraints.txt pins {expected}: run `make install`"
