"""Where the demo's time goes: `dvc repro` with every stage timed, as a table of minutes and shares.

    .venv/bin/python bench/profile_demo.py                      # in a fresh clone: every stage runs
    .venv/bin/python bench/profile_demo.py --out reports/profile.csv --force

Runs `dvc repro` (with --force: every stage, cached or not) in the repo root, passing its output
through, and stamps the moment each "Running stage '<name>'" line arrives: a stage's wall time runs
from its line to the next stage's (or to the end). Stages DVC skips as unchanged take no time and
are left out. Prints a markdown table, longest first, of minutes, share of the total and, where
the stage's work is a count of images, images per second: training images (steps x batch) for
the generative models, images made by `generate` (guided and controls), `sweep@*` and `upsample`,
windows rendered by `inpaint` (guided and unguided), counted in their outputs. Writes the same rows as CSV to --out. Time it alone on the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

STAGE_LINE = re.compile(r"Running stage '([^']+)'")
# stage -> params section whose max_steps x batch_size (x grad_accum) is its training images
TRAINING = {"train_unet": "unet", "train_patch_unet": "patch_unet", "train_upsampler": "upsampler",
            "train_classifier": "classifier", "train_judge": "judge", "train_patch_classifier": "patch_classifier",
            "train_patch_judge": "patch_judge"}


def timed_repro(args: list[str]) -> tuple[dict[str, float], float]:
    """Run `dvc repro args`, echoing its output; returns each stage's seconds and the whole run's."""
    start = time.perf_counter()
    starts: list[tuple[str, float]] = []
    process = subprocess.Popen(["dvc", "repro", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for raw in process.stdout:
        line = raw.decode(errors="replace")
        sys.stdout.write(line)
        match = STAGE_LINE.search(line)
        if match:
            starts.append((match.group(1), time.perf_counter()))
    if process.wait():
        raise SystemExit(f"profile_demo: dvc repro failed (exit code {process.returncode})")
    end = time.perf_counter()
    ends = [t for _, t in starts[1:]] + [end]
    return {name: stop - begun for (name, begun), stop in zip(starts, ends)}, end - start


def images_made(stage: str, params: dict[str, Any]) -> int | None:
    """The images a stage trains on or makes, where params and its outputs fix them; else None."""
    if stage in TRAINING:
        section = params[TRAINING[stage]]
        return section["max_steps"] * section["batch_size"] * section.get("grad_accum", 1)
    paths = params["paths"]
    if stage == "inpaint":  # windows rendered, guided and unguided, not the images written
        report = Path(paths["reports"]) / "inpaint.json"
        overall = json.loads(report.read_text())["overall"] if report.is_file() else None
        return overall["placed"] + overall["verified"]["n_pairs"] if overall else None
    folder = {"generate": Path(paths["synthetic"]), "upsample": Path(paths["upsampled"]) / "images"}.get(stage)
    if stage.startswith("sweep@"):
        folder = Path(paths["sweep"]) / f"scale_{stage.split('@')[1]}"  # augment.tradeoff.scale_dir_name
    return sum(1 for _ in folder.rglob("*.png")) if folder is not None and folder.is_dir() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rerun every stage (dvc repro --force)")
    parser.add_argument("--out", default=None, help="also write the rows to this CSV")
    args = parser.parse_args(argv)
    seconds, total = timed_repro(["--force"] if args.force else [])
    params = yaml.safe_load(Path("params.yaml").read_text())
    rows = []
    for stage, s in sorted(seconds.items(), key=lambda item: -item[1]):
        images = images_made(stage, params)
        rows.append({"stage": stage, "minutes": round(s / 60, 2), "share": round(s / total, 3),
                     "images_per_s": round(images / s, 1) if images else ""})
    print("\n| stage | min | share | images/s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {row['minutes']:.2f} | {row['share']:.1%} | {row['images_per_s']} |")
    print(f"| all ({len(rows)} stages) | {total / 60:.2f} | 100% | |")
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["stage"])
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
