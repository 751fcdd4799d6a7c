"""Stage sweep_plot: the guidance-scale sweep points -> trade-off table (DVC plot) and figure.

    python -m pipelines.sweep_plot

Reads <paths.sweep>/scale_<s>/metrics.json for every s in sweep.scales and writes
<paths.reports>/sweep/tradeoff.csv and guidance_tradeoff.png (scale vs FD, precision, recall,
judge hit rate).
"""

from __future__ import annotations

import json
import sys

import matplotlib

from augment.settings import SweepSettings
from augment.tradeoff import plot_tradeoff, scale_dir_name, tradeoff_table
from core.errors import StageError
from core.io import atomic_file, write_csv
from core.params import section
from pipelines.stage import run_stage, stage_args


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    sweep = section(SweepSettings, "sweep", params)
    points = []
    for scale in sweep.scales:
        path = paths.sweep / scale_dir_name(scale) / "metrics.json"
        if not path.is_file():
            raise StageError(f"{path}: not found; run the sweep@{scale} stage first")
        points.append(json.loads(path.read_text()))
    if len({(p["extractor"], p["n_generated"], p["n_real"]) for p in points}) > 1:
        raise StageError(f"{paths.sweep}: sweep points differ in extractor or n; rerun them with the same settings")
    table = tradeoff_table(points)
    write_csv(paths.reports / "sweep" / "tradeoff.csv", table)
    with atomic_file(paths.reports / "sweep" / "guidance_tradeoff.png") as tmp:
        plot_tradeoff(table, tmp)
    print(table.to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
