"""Apply settings profiles to params.yaml: `python -m pipelines.profile one_gpu [other.yaml ...]
[--set section.key=value ...] [--params params.yaml] [--out FILE]`.

A profile is a name of pipelines/profiles/ (`one_gpu`, `gpu_check`) or a YAML file of the params.yaml
keys it changes (`core.profiles` says how shared values and unknown keys are treated); `--set`
changes one key (the value read as YAML), after the profiles, in order. The result is written to
`--out` (default: the `--params` file itself) with params.yaml's comments and layout kept. For one
key, `dvc exp run -S section.key=value` does the same as an experiment; a profile changes many keys
at once and checks that the sections which must agree still do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import StageError
from core.io import write_text
from core.profiles import load_profile, parse_set, profiled_params
from pipelines.stage import run_stage

PROFILES = Path(__file__).resolve().parent / "profiles"


def profile_path(name: str) -> Path:
    """A profile file, or the name of one shipped in pipelines/profiles/ (`one_gpu`)."""
    shipped = PROFILES / f"{name}.yaml"
    return shipped if "/" not in name and not name.endswith(".yaml") and shipped.is_file() else Path(name)


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="*", type=profile_path,
                        help="profile files or names of pipelines/profiles/*.yaml, applied in order")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (YAML)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: --params)")
    args = parser.parse_args(argv)
    if not args.params.is_file():
        raise StageError(f"{args.params}: params file not found")
    overrides = [load_profile(path) for path in args.profiles] + [parse_set(item) for item in args.sets]
    text = profiled_params(args.params.read_text(), overrides)
    write_text(args.out or args.params, text)
    print(f"profile: {len(overrides)} override(s) -> {args.out or args.params}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
