"""Stage demo_data: render the built-in procedural road-litter dataset (PNG + COCO json).

    python -m pipelines.demo_data [--params params.yaml] [--out <paths.demo>]

Writes `<out>/images/*.png`, `<out>/annotations.json` (COCO; `info` holds the generator
version, seed, per-class object counts and the number of clean images) and the resolved settings
in `<out>/meta/params.json` (not beside annotations.json: the COCO reader reads every *.json there).
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.io import atomic_dir, write_json
from core.params import section
from detection.demo import DemoSettings, write_demo
from pipelines.stage import run_stage, stage_args


def _main(argv: list[str] | None) -> None:
    args, params, paths = stage_args(__doc__, argv, lambda parser: parser.add_argument(
        "--out", default=None, help="output dataset folder (default: paths.demo)"))
    settings = section(DemoSettings, "demo", params)
    out = Path(args.out) if args.out else paths.demo
    with atomic_dir(out) as tmp:
        info = write_demo(settings, tmp)
        write_json(tmp / "meta" / "params.json", settings)
    counts = ", ".join(f"{name} {n}" for name, n in info["object_counts"].items())
    print(f"demo_data: {settings.n_images} images ({info['clean_images']} clean) -> {out}; objects: {counts}")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; a bad setting prints one line on stderr and returns 2."""
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
