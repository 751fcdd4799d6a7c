"""Stage demo_data: render the built-in procedural road-litter dataset (PNG + COCO json).

    python -m pipelines.demo_data [--params params.yaml] [--out data/raw/demo]

Writes `<out>/images/*.png`, `<out>/annotations.json` (COCO; `info` holds the generator
version, seed, per-class object counts and the number of clean images) and the resolved settings
in `<out>/meta/params.json` (not beside annotations.json: the COCO reader reads every *.json there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.demo import DemoSettings, write_demo
from pipelines.stage import atomic_dir, read_params, run_stage, section, write_json


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="settings file (section `demo`)")
    parser.add_argument("--out", default="data/raw/demo", help="output dataset folder")
    args = parser.parse_args(argv)
    settings = section(DemoSettings, "demo", read_params(args.params))
    with atomic_dir(Path(args.out)) as tmp:
        info = write_demo(settings, tmp)
        write_json(tmp / "meta" / "params.json", settings)
    counts = ", ".join(f"{name} {n}" for name, n in info["object_counts"].items())
    print(f"demo_data: {settings.n_images} images ({info['clean_images']} clean) -> {args.out}; objects: {counts}")


def main(argv: list[str] | None = None) -> int:
    """Run the stage; a bad setting prints one line on stderr and returns 2."""
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
