"""Stage sweep_plot: the guidance-scale sweep points -> trade-off table (DVC plot) and figure.

    python -m pipelines.sweep_plot

Reads data/sweep/scale_<s>/metrics.json for every s in sweep.scales and writes
reports/sweep/tradeoff.csv and reports/sweep/guidance_tradeoff.png (scale vs FD, precision,
recall, judge hit rate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from augment.sweep import SweepSettings, plot_tradeoff, scale_dir_name, tradeoff_table
from pipelines.stage import StageError, read_params, run_stage, section, write_csv

SWEEP, REPORTS = Path("data/sweep"), Path("reports/sweep")


def _main(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    sweep = section(SweepSettings, "sweep", read_params(args.params))
    points = []
    for scale in sweep.scales:
        path = SWEEP / scale_dir_name(scale) / "metrics.json"
        if not path.is_file():
            raise StageError(f"{path}: not found; run the sweep@{scale} stage first")
        points.append(json.loads(path.read_text()))
    if len({(p["extractor"], p["n_generated"], p["n_real"]) for p in points}) > 1:
        raise StageError(f"{SWEEP}: sweep points differ in extractor or n; rerun them with the same settings")
    table = tradeoff_table(points)
    write_csv(REPORTS / "tradeoff.csv", table)
    fd, tmp = tempfile.mkstemp(dir=REPORTS, prefix=".guidance_tradeoff.", suffix=".png")
    os.close(fd)
    try:
        plot_tradeoff(table, Path(tmp))
        os.replace(tmp, REPORTS / "guidance_tradeoff.png")
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(table.to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
