"""augment.sweep + stages sweep@<s> / sweep_plot: settings per point, DVC stage names, the sweep end to end."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from augment.settings import GenerateSettings, SweepSettings
from augment.sweep import point_settings
from augment.tradeoff import point_summary, scale_dir_name, tradeoff_table
from core.errors import StageError
from core.params import section
from pipelines import sweep_plot, sweep_point
from tests.support import (
    REPO,
    TINY_CLASSES,
    TINY_GENERATE,
    TINY_METRICS,
    settings,
    tiny_params,
    write_params,
    write_tiny_models,
)


def test_point_settings_replace_only_scale_sampler_steps_quota_and_controls():
    base = settings(GenerateSettings, "generate", **{**TINY_GENERATE, "sampler": "ddim", "eta": 0.3})
    sweep = settings(SweepSettings, "sweep", scales=[0, 2.5], per_class=4, sampler="ddim", steps=7)
    point = point_settings(base, sweep, 2.5, TINY_CLASSES)
    assert (point.guidance_scale, point.steps, point.eta, point.control_per_class) == (2.5, 7, 0.3, 0)
    assert point.quota == {name: 4 for name in TINY_CLASSES}
    assert (point.seed, point.batch_size, point.mixed_precision) == (base.seed, base.batch_size, base.mixed_precision)
    assert (point.balance_factor, point.min_per_class) == (0.0, 0)  # unused beside the explicit quota
    solver = settings(SweepSettings, "sweep", sampler="dpmsolver++")
    assert point_settings(base, solver, 1, TINY_CLASSES).eta == 0.0


@pytest.mark.parametrize("values, message", [
    ({"scales": []}, "sweep.scales: .*non-empty list"), ({"scales": [1, -1]}, "sweep.scales: .*numbers >= 0"),
    ({"scales": [1, 1.0]}, "sweep.scales: .*repeat"), ({"sampler": "euler"}, "sweep.sampler: 'euler' is not one of"),
    ({"per_class": 0}, "sweep.per_class: must be >= 1"), ({"steps_count": 3}, "sweep: unknown key"),
])
def test_bad_sweep_settings_fail_with_one_line(values, message):
    with pytest.raises(StageError, match=f"^params.yaml: {message}"):
        section(SweepSettings, "sweep", tiny_params(sweep=values))


def test_dvc_resolves_one_sweep_stage_per_scale_named_like_its_folder():
    scales = yaml.safe_load((REPO / "params.yaml").read_text())["sweep"]["scales"]
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list"], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True).stdout
    stages = {line.split()[0]: line for line in listed.splitlines() if line.strip()}
    assert {"gen_metrics", "sweep_plot"} <= set(stages)
    for scale in scales:
        assert f"data/sweep/{scale_dir_name(scale)}" in stages[f"sweep@{scale}"]


def test_point_summary_keeps_the_overall_figures_and_per_class_hit_rates():
    overall = {"extractor": "judge", "n_real": 5, "n_generated": 3, "fd": 1.0, "kid_mean": 0.1, "precision": 0.5,
               "recall": 0.5, "judge_hit_rate": 0.2, "judge_is": 1.1, "k": 3}
    report = {"note": "n", "sets": {"sweep": {"overall": overall, "per_class": {
        "bottle": {"judge_hit_rate": 0.5}, "can": {"judge_hit_rate": None}}}}}
    summary = point_summary(3, report)
    assert summary["guidance_scale"] == 3.0 and summary["fd"] == 1.0 and summary["precision_recall_k"] == 3
    assert summary["per_class_hit_rate"] == {"bottle": 0.5, "can": None} and summary["note"] == "n"


def test_tradeoff_table_is_sorted_by_scale():
    row = {"extractor": "judge", "n_real": 5, "n_generated": 3, "fd": 1.0, "kid_mean": 0.1, "precision": 0.5,
           "recall": 0.5, "judge_hit_rate": 0.2, "judge_is": 1.1}
    table = tradeoff_table([{**row, "guidance_scale": 10.0}, {**row, "guidance_scale": 0.0}])
    assert table["guidance_scale"].tolist() == [0.0, 10.0] and list(table.columns)[0] == "guidance_scale"


@pytest.mark.slow
def test_sweep_points_and_plot_end_to_end(tiny_prepared, tmp_path, monkeypatch, capsys):
    write_tiny_models(tmp_path)
    write_params(tmp_path, generate=TINY_GENERATE, gen_metrics=TINY_METRICS,
                 sweep={"scales": [0, 2.5], "per_class": 2, "sampler": "ddim", "steps": 2})
    monkeypatch.chdir(tmp_path)
    assert sweep_plot.main([]) == 2
    assert "data/sweep/scale_0/metrics.json: not found" in capsys.readouterr().err
    for scale in ("0", "2.5"):
        assert sweep_point.main(["--scale", scale]) == 0
        point = tmp_path / "data/sweep" / f"scale_{scale}"
        manifest = pd.read_csv(point / "manifest.csv", keep_default_na=False)
        assert manifest["target"].tolist() == [c for c in TINY_CLASSES for _ in range(2)]
        assert set(manifest["guidance_scale"]) == {float(scale)} and set(manifest["steps"]) == {2}
        assert all((point / p).is_file() for p in manifest["path"])
        summary = json.loads((tmp_path / f"reports/sweep/scale_{scale}.json").read_text())
        assert summary == json.loads((point / "metrics.json").read_text())
        assert summary["extractor"] == "judge" and summary["n_generated"] == 6 and summary["n_real"] == 6
        assert set(summary["per_class_hit_rate"]) == set(TINY_CLASSES)
        assert summary["judge_hit_rate"] == pytest.approx(sum(summary["per_class_hit_rate"].values()) / 3, abs=1e-3)
    seeds = [pd.read_csv(tmp_path / f"data/sweep/scale_{s}/manifest.csv")["seed"].tolist() for s in ("0", "2.5")]
    assert seeds[0] == seeds[1]  # the points differ only by the scale
    for wrong in ("-1", "high"):
        assert sweep_point.main(["--scale", wrong]) == 2
        assert capsys.readouterr().err == f"error: sweep_point: --scale {wrong}: not a guidance scale (a number >= 0)\n"

    assert sweep_plot.main([]) == 0
    table = pd.read_csv(tmp_path / "reports/sweep/tradeoff.csv")
    assert table["guidance_scale"].tolist() == [0.0, 2.5] and set(table["extractor"]) == {"judge"}
    assert (tmp_path / "reports/sweep/guidance_tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "reports/sweep").glob(".*"))
