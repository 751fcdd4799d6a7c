"""The whole DVC pipeline on tiny params in a temporary copy of the repo, and DVC's cache behaviour."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from core.params import FREE_FORM_KEYS
from core.params_trace import TRACE_ENV
from core.profiles import profiled_params
from tests.support import REPO, TINY, load_bench, tiny_params

COPIED = ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", "core", "scenes", "augment", "detection", "pipelines")


def params_read_dir(workdir: Path) -> Path:
    """Where each stage process of `workdir` records the params keys it read (core.params.TRACE_ENV)."""
    return workdir.parent / f"{workdir.name}-params-read"


def dvc_env(workdir: Path) -> dict[str, str]:
    return {**os.environ, TRACE_ENV: str(params_read_dir(workdir)), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "YOLO_OFFLINE": "true", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(workdir),
            "PYTHONUNBUFFERED": "1", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def git(workdir: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=workdir, env=dvc_env(workdir), capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)} failed:\n{result.stderr[-2000:]}"
    return result.stdout


def dvc(workdir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, env=dvc_env(workdir),
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def set_param(workdir: Path, stage: str, key: str, value) -> None:
    path = workdir / "params.yaml"
    path.write_text(profiled_params(path.read_text(), [{stage: {key: value}}]))


def fresh_copy(workdir: Path, params: dict) -> Path:
    """The repo's code and pipeline in `workdir`, a git repository, with `params` written as params.yaml is (and
    as `dvc exp run -S` writes it), the empty pool folder every clone has, DVC set up."""
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, workdir / name)
    (workdir / "data" / "unlabelled").mkdir(parents=True)
    params_read_dir(workdir).mkdir()
    (workdir / "params.yaml").write_text(profiled_params((REPO / "params.yaml").read_text(), [params]))
    git(workdir, "init", "-q")
    dvc(workdir, "init", "-q")
    dvc(workdir, "config", "core.analytics", "false")
    git(workdir, "add", "-A")
    git(workdir, "commit", "-q", "-m", "tiny pipeline")
    return workdir


def repro_in_a_fresh_copy(workdir: Path) -> Path:
    """`dvc repro`, then dvc.lock and the metrics committed, as after a run you keep."""
    dvc(fresh_copy(workdir, tiny_params()), "repro")
    git(workdir, "add", "-A")
    git(workdir, "commit", "-q", "-m", "tiny run")
    return workdir


@pytest.fixture(scope="module")
def pipeline_copy(tmp_path_factory) -> Path:
    return repro_in_a_fresh_copy(tmp_path_factory.mktemp("repo"))


# Logs of how long things took and the UNet's resume state (it keeps the elapsed time): no stage
# reads them, and they differ between any two runs.
RUN_RECORDS = ("checkpoints/unet", "reports/unet/training.json", "reports/unet/loss.csv", "reports/classifier.json",
               "reports/judge.json", "checkpoints/upsampler", "reports/upsampler/training.json",
               "reports/upsampler/loss.csv", "checkpoints/patch_unet", "reports/patch_unet/training.json",
               "reports/patch_unet/loss.csv", "reports/patch_classifier.json", "reports/patch_judge.json",
               "reports/yolo/baseline", "reports/yolo/augmented", "reports/yolo/selftrain", "reports/yolo/copypaste",
               "reports/yolo/inpaint")


def out_hashes(workdir: Path) -> dict[str, str]:
    locked = yaml.safe_load((workdir / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in locked.values() for out in stage.get("outs", [])
            if out["path"] not in RUN_RECORDS}


@pytest.mark.slow
def test_full_repro_runs_every_stage_and_writes_every_declared_output(pipeline_copy):
    listed = {line.split()[0] for line in dvc(pipeline_copy, "stage", "list").splitlines() if line.strip()}
    locked = yaml.safe_load((pipeline_copy / "dvc.lock").read_text())["stages"]
    assert set(locked) == listed and len(listed) == 26  # 5 YOLO variants and 2 sweep scales expanded
    outs = [out["path"] for stage in locked.values() for out in stage.get("outs", [])]
    missing = [path for path in outs if not (pipeline_copy / path).exists()]
    assert len(outs) >= 30 and not missing, f"declared but not written: {missing}"
    assert not list(pipeline_copy.rglob(".*.tmp")), "temp files or folders of atomic writes left behind"

    report = json.loads((pipeline_copy / "reports/import.json").read_text())
    demo_info = json.loads((pipeline_copy / "data/raw/demo/annotations.json").read_text())["info"]
    assert report["images"] == TINY["demo"]["n_images"]
    assert report["boxes_per_class"] == demo_info["object_counts"]


def leaf_keys(params: dict, key: str) -> set[str]:
    """`key` or the dotted keys of every value under it (a mapping of the user's own keys is one value)."""
    value = params
    for part in key.split("."):
        value = value[part]
    if not isinstance(value, dict) or key.split(".")[-1] in FREE_FORM_KEYS:
        return {key}
    return set().union(*(leaf_keys(params, f"{key}.{sub}") for sub in value))


# Read only on a branch the tiny params do not take; the stages list them for the runs that do.
READ_ON_ANOTHER_BRANCH = {"gen_metrics.inception_weights": "gen_metrics.extractor: inception"}


@pytest.mark.slow
def test_each_stage_lists_in_dvc_yaml_exactly_the_params_it_reads(pipeline_copy):
    """What a stage's processes read from their settings (traced in core.params_trace) against what
    its `params:` make DVC watch, leaf key by leaf key; `paths` reach DVC through deps and outs."""
    params = yaml.safe_load((pipeline_copy / "params.yaml").read_text())
    assert params["gen_metrics"]["extractor"] != "inception"  # the branch READ_ON_ANOTHER_BRANCH names
    read: dict[str, set[str]] = {}
    for record in params_read_dir(pipeline_copy).glob("*.json"):
        trace = json.loads(record.read_text())
        keys = {k for key in trace["keys"] for k in leaf_keys(params, key) if not k.startswith("paths.")}
        read.setdefault(trace["stage"], set()).update(keys)
    locked = yaml.safe_load((pipeline_copy / "dvc.lock").read_text())["stages"]
    assert set(read) == set(locked), f"stages without a trace: {sorted(set(locked) - set(read))}"
    for stage, record in locked.items():
        listed = set().union(*(leaf_keys(params, key) for key in record.get("params", {}).get("params.yaml", {})))
        assert not read[stage] - listed, f"dvc.yaml stage {stage}: reads {sorted(read[stage] - listed)}, not in params:"
        unread = listed - read[stage] - set(READ_ON_ANOTHER_BRANCH)
        assert not unread, f"dvc.yaml stage {stage}: params: lists {sorted(unread)}, never read"


@pytest.mark.slow
def test_every_variant_trains_every_seed_at_the_detector_resolution_and_is_scored_per_seed(pipeline_copy):
    seeds = TINY["yolo"]["seeds"]
    variants = ("baseline", "augmented", "selftrain", "copypaste", "inpaint")
    for variant in variants:
        assert all((pipeline_copy / f"models/yolo/{variant}/seed_{s}/best.pt").is_file() for s in seeds), variant
    # the generative models work at 16 px; the upsampler brings their images to the prepared 32 px
    assert Image.open(next((pipeline_copy / "data/synthetic/images").glob("*.png"))).size == (16, 16)
    upsampled = list((pipeline_copy / "data/upsampled/images").glob("*.png"))
    assert len(upsampled) == len(list((pipeline_copy / "data/synthetic/images").glob("*.png")))
    assert all(Image.open(p).size == (32, 32) for p in upsampled)
    upsample = json.loads((pipeline_copy / "reports/upsample.json").read_text())
    assert upsample["method"] == "diffusion" and set(upsample["methods"]) == {"diffusion", "bicubic"}
    assert "Upsampler vs plain resampling" in (pipeline_copy / "reports/report.md").read_text()
    pseudo = list((pipeline_copy / "data/pseudo/synthetic/images").glob("*.png"))
    assert all(Image.open(p).size == (32, 32) for p in pseudo)
    metrics = json.loads((pipeline_copy / "reports/summary.json").read_text())
    assert metrics["seeds"] == len(seeds)
    for variant in variants:
        assert set(metrics[variant]["mAP50_seed"]) == {str(s) for s in seeds}
        assert 0 <= metrics[variant]["mAP50"] <= 1
    for variant in variants[1:]:
        delta = metrics[f"delta_{variant}"]["mAP50"]
        assert delta["ci_low"] <= delta["delta"] <= delta["ci_high"] or delta["delta"] is None
        assert delta["resolved"] == (delta["ci_low"] > 0 or delta["ci_high"] < 0)
    # copy-paste asks, per class, for as many objects as the insertions kept, in the same images
    copypaste = json.loads((pipeline_copy / "reports/copypaste.json").read_text())
    inpaint = json.loads((pipeline_copy / "reports/inpaint.json").read_text())
    assert {n: c["requested"] for n, c in copypaste["per_class"].items()} == \
        {n: c["kept"] for n, c in inpaint["per_class"].items()}
    assert copypaste["images"] == inpaint["images_written"] and copypaste["form"] in ("mask", "box", "mask and box")
    assert "resolved" in (pipeline_copy / "reports/report.md").read_text()


@pytest.mark.slow
def test_every_synthetic_source_is_judged_by_the_baseline_and_gated(pipeline_copy):
    realism = json.loads((pipeline_copy / "reports/realism.json").read_text())
    gate = {p.stem: json.loads(p.read_text()) for p in (pipeline_copy / "data/pseudo/gate").glob("*.json")}
    assert set(realism["sources"]) == set(gate) == {"synthetic", "inpaint", "copypaste"}
    names = json.loads((pipeline_copy / "reports/import.json").read_text())["classes"]
    for source, result in realism["sources"].items():
        assert list(result["per_class"]) == names
        for f in result["per_class"].values():
            assert f["agreement"] is None or 0 <= f["agreement"] <= 1
            assert f["box_iou"] is None or 0 < f["box_iou"] <= 1
            assert f["passed"] == (None if f["agreement"] is None else True)  # the tiny gate is 0: all pass
        assert gate[source] == {"failed": [], "gated_out": []}
    report = (pipeline_copy / "reports/report.md").read_text()
    assert "Judged by the detector" in report and "| insertions | inpaint |" in report


@pytest.mark.slow
def test_bench_realism_measures_the_runs_insertions(pipeline_copy, capsys, monkeypatch):
    monkeypatch.chdir(pipeline_copy)  # the bench changes into --root; this puts the test's folder back after
    load_bench("bench_realism").main(["--root", str(pipeline_copy)])
    out = capsys.readouterr().out
    kept = json.loads((pipeline_copy / "reports/inpaint.json").read_text())["overall"]["kept"]
    if not kept:
        assert out.endswith("no insertion to measure\n")
        return
    rows = [line for line in out.splitlines() if line.startswith("| box: ") or line.startswith("| upsampler")]
    assert len(rows) == 6 and all(f"| {kept} |" in row for row in rows)


@pytest.mark.slow
def test_inpaint_keeps_only_measured_judged_boxes_and_the_variant_trains_on_them(pipeline_copy):
    inpaint = json.loads((pipeline_copy / "reports/inpaint.json").read_text())
    overall = inpaint["overall"]
    assert overall["placed"] + overall["unplaced"] == overall["planned"] > 0
    assert overall["kept"] + sum(overall["undone"].values()) == overall["placed"]
    assert len(inpaint["undone"]) == sum(overall["undone"].values())
    manifest = pd.read_csv(pipeline_copy / "data/pseudo/inpaint/manifest.csv", dtype={"image_id": str})
    assert len(manifest) == inpaint["images_written"] and manifest["n_inserted"].sum() == overall["kept"]
    prepared = pd.read_csv(pipeline_copy / "data/prepared/manifest.csv")
    held_out = {p for s, p in zip(prepared["split"], prepared["path"]) if s in ("val", "test")}
    assert not {Path(p).relative_to("data/prepared").as_posix() for p in manifest["source_path"]} & held_out
    for row in manifest.itertuples():  # the canvas's own lines, then one per kept insertion
        canvas_labels = Path(pipeline_copy / row.source_path.replace("/images/", "/labels/")).with_suffix(".txt")
        lines = (pipeline_copy / "data/pseudo/inpaint/labels" / f"{row.image_id}.txt").read_text().splitlines()
        own = canvas_labels.read_text().splitlines() if canvas_labels.is_file() else []
        assert lines[:len(own)] == own and len(lines) == len(own) + row.n_inserted
    report = (pipeline_copy / "reports/report.md").read_text()
    assert "Litter inserted into real scenes" in report and "| inpaint |" in report


@pytest.mark.slow
def test_second_repro_reruns_nothing(pipeline_copy):
    assert stages_run(dvc(pipeline_copy, "repro")) == set()


@pytest.mark.slow
def test_changing_only_the_launcher_retrains_nothing(pipeline_copy):
    text = (pipeline_copy / "params.yaml").read_text()
    set_param(pipeline_copy, "launch", "accelerate", "accelerate launch --multi_gpu --num_processes 4")
    try:
        assert "Data and pipelines are up to date" in dvc(pipeline_copy, "status")
    finally:
        (pipeline_copy / "params.yaml").write_text(text)


def stages_run(repro_output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", repro_output))


@pytest.mark.slow
def test_a_second_clone_gives_the_same_output_hashes(pipeline_copy, tmp_path_factory):
    first = out_hashes(pipeline_copy)
    second = out_hashes(repro_in_a_fresh_copy(tmp_path_factory.mktemp("clone")))
    assert first.keys() == second.keys()
    assert {path for path in first if first[path] != second[path]} == set()


@pytest.mark.slow
@pytest.mark.parametrize("stage, downstream", [("train_unet", "train_classifier"), ("generate", "pseudo_label"),
                                               ("train_yolo@baseline", "pseudo_label_tagged")])
def test_rerunning_a_stage_with_the_same_params_leaves_what_follows_cached(pipeline_copy, stage, downstream):
    hashes = out_hashes(pipeline_copy)
    assert stages_run(dvc(pipeline_copy, "repro", "--force", "--single-item", stage)) == {stage}
    assert out_hashes(pipeline_copy) == hashes
    assert downstream not in stages_run(dvc(pipeline_copy, "repro"))


@pytest.mark.slow
def test_a_killed_generate_rerun_leaves_pseudo_label_cached_and_no_temps(pipeline_copy):
    hashes = out_hashes(pipeline_copy)
    run = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "generate"],
                           cwd=pipeline_copy, env=dvc_env(pipeline_copy), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, start_new_session=True)
    for line in run.stdout:  # kill the whole process group once generation runs
        if b"pipelines.generate" in line:
            break
    time.sleep(2)
    with contextlib.suppress(ProcessLookupError):  # on a very fast machine it may have finished
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert stages_run(dvc(pipeline_copy, "repro")) <= {"generate"}  # reruns only what the kill removed
    assert out_hashes(pipeline_copy) == hashes
    assert not list(pipeline_copy.rglob(".*.tmp"))


@pytest.mark.slow
def test_dvc_shows_the_metrics_in_a_terminal_and_the_plots_on_one_page(pipeline_copy, tmp_path):
    variants = yaml.safe_load((pipeline_copy / "params.yaml").read_text())["evaluate"]["variants"]
    # the metrics are committed with dvc.lock; the reports are git-ignored
    assert git(pipeline_copy, "ls-files", "metrics").split() == sorted(f"metrics/{v}.json" for v in variants)
    assert not git(pipeline_copy, "ls-files", "reports") and not git(pipeline_copy, "status", "--porcelain", "metrics")
    table = dvc(pipeline_copy, "metrics", "show", "--md")
    assert all(f"metrics/{v}.json" in table for v in variants)
    assert max(len(line) for line in table.splitlines()) <= 160
    dvc(pipeline_copy, "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    n_classes = len(json.loads((pipeline_copy / "reports/import.json").read_text())["classes"])
    # a PR chart per class, YOLO loss, the generative losses, two guidance trade-off charts; seven figures
    assert page.count('"$schema"') == n_classes + 4
    assert len(re.findall(r"<img ", page)) == 7


def changed_metrics(workdir: Path) -> set[tuple[str, str]]:
    """(file, key) of every metric whose workspace value differs from HEAD's, read from the files themselves."""
    changed = set()
    for path in sorted((workdir / "metrics").glob("*.json")):
        name = path.relative_to(workdir).as_posix()
        old, new = json.loads(git(workdir, "show", f"HEAD:{name}")), json.loads(path.read_text())
        changed |= {(name, key) for key in new if new[key] != old.get(key)}
    return changed


@pytest.mark.slow
def test_a_guidance_scale_experiment_reruns_only_generation_and_what_follows(pipeline_copy):
    scale = yaml.safe_load((pipeline_copy / "params.yaml").read_text())["generate"]["guidance_scale"] + 1.5
    ran = stages_run(dvc(pipeline_copy, "exp", "run", "-S", f"generate.guidance_scale={scale}"))
    # the insertions and copy-paste do not read the generated scenes; their training images change only if
    # the gate's decision does, and the tiny gate passes every class
    assert ran == {"generate", "gen_metrics", "upsample", "pseudo_label", "realism", "train_yolo@augmented",
                   "evaluate"}
    diff = git(pipeline_copy, "diff", "-U0", "params.yaml").splitlines()
    assert [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))] == [
        line for line in diff if re.match(r"^[-+]  guidance_scale: ", line)] and len(diff) > 0
    assert git(pipeline_copy, "diff", "--numstat", "params.yaml").split()[:2] == ["1", "1"]
    reported = json.loads(dvc(pipeline_copy, "metrics", "diff", "--json"))
    assert {(path, key) for path, keys in reported.items() for key in keys} == changed_metrics(pipeline_copy)
    experiments = dvc(pipeline_copy, "exp", "show", "--md", "--only-changed")
    assert "generate.guidance_scale" in experiments and str(scale) in experiments
    assert stages_run(dvc(pipeline_copy, "repro")) == set()
