"""bench/gpu_check.sh: every stage without DVC, figures written as it goes; here on CPU with tiny params."""

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.support import REPO, load_bench, write_params


def test_the_stage_order_covers_dvc_yaml_and_runs_each_stage_after_what_it_reads():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = [name for name, _ in load_bench("gpu_check").ordered_stages(params)]
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert len(names) == len(set(names)) == len(dvc) - 2 + 5 + len(params["sweep"]["scales"])
    assert [n for n in names if n.startswith("sweep@")] == [f"sweep@{s}" for s in params["sweep"]["scales"]]
    before = {name: i for i, name in enumerate(names)}
    for first, then in [("import", "train_unet"), ("train_unet", "train_classifier"), ("train_yolo@baseline", "pseudo_label"),
                        ("generate", "pseudo_label"), ("pseudo_label", "copypaste"), ("pseudo_label", "train_yolo@augmented"),
                        ("pseudo_label_tagged", "train_yolo@selftrain"), ("sweep_plot", "evaluate"),
                        ("train_yolo@copypaste", "evaluate"), ("sweep@0", "sweep_plot"),
                        ("train_patch_unet", "train_patch_classifier"), ("train_patch_judge", "inpaint"),
                        ("inpaint", "train_yolo@inpaint"), ("train_yolo@inpaint", "evaluate")]:
        assert before[first] < before[then]


def run_check(tmp_path, *args):
    write_params(tmp_path)
    return subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), str(tmp_path / "out"),
                           "--params", str(tmp_path / "params.yaml"), "--profiles", *args],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=1200)


def stage_rows(out):
    with open(out / "stages.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_on_cpu_every_stage_runs_and_the_folder_holds_times_throughput_and_figures(tmp_path):
    done = run_check(tmp_path, "--set", "yolo.seeds=[0]", "--set", "sweep.scales=[0]")
    out = tmp_path / "out"
    assert done.returncode == 0, done.stderr[-3000:] + (out / "log.txt").read_text()[-3000:]
    rows = stage_rows(out)
    assert [r["stage"] for r in rows][:3] == ["demo_data", "import", "train_unet"] and rows[-1]["stage"] == "evaluate"
    assert all(r["exit_code"] == "0" and float(r["seconds"]) > 0 for r in rows)
    summary = (out / "summary.md").read_text()
    assert f"{len(rows)} of {len(rows)} stages done" in summary
    assert "images/s (second half of the run)" in summary and "- generate: " in summary
    for variant in ("baseline", "augmented", "selftrain", "copypaste", "inpaint"):
        assert f"- {variant}: test mAP50 " in summary
    metrics = json.loads((out / "reports" / "summary.json").read_text())
    assert metrics["seeds"] == 1 and 0 <= metrics["baseline"]["mAP50"] <= 1
    assert json.loads((out / "machine.json").read_text())["machine"]["gpus"] == 0
    assert yaml.safe_load((out / "params.yaml").read_text())["yolo"]["seeds"] == [0]


def test_a_failed_stage_stops_the_check_and_leaves_what_ran_before_it(tmp_path):
    done = run_check(tmp_path, "--set", "unet.max_steps=0")
    out = tmp_path / "out"
    assert done.returncode == 1 and "train_unet failed with exit code 2" in done.stderr
    assert [(r["stage"], r["exit_code"]) for r in stage_rows(out)] == [("demo_data", "0"), ("import", "0"), ("train_unet", "2")]
    assert "2 of " in (out / "summary.md").read_text() and (out / "reports" / "import.json").is_file()
    assert "unet.max_steps: must be >= 1, got 0" in (out / "log.txt").read_text()
