"""Run every stage of the pipeline once, without DVC, and write stage times, throughput and the key
figures to one small folder as it goes. `bench/gpu_check.sh OUT` is the entry point (it makes sure
nothing waits on the network); see there.

    python bench/gpu_check.py OUT [--params params.yaml] [--profiles one_gpu gpu_check] [--set k=v ...]

The stages, their commands and their order come from dvc.yaml (`foreach` expanded); they run in
OUT/work/ on the params file made from --params, the profiles and the --set overrides
(`pipelines.profile`). After each stage OUT/ holds stages.csv (stage, seconds, exit code),
summary.md and a copy of the reports so far, so a run cut short still leaves its figures; the
models and data stay in OUT/work/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.profiles import load_profile, parse_set, profiled_params  # noqa: E402
from pipelines.profile import profile_path  # noqa: E402

# dvc.yaml's stages in an order that runs each after what it reads (a test checks the set matches).
ORDER = ("demo_data", "import", "train_unet", "train_classifier", "train_judge", "train_upsampler",
         "train_patch_unet", "train_patch_classifier", "train_patch_judge",
         "train_yolo@baseline", "generate", "gen_metrics", "sweep@*", "sweep_plot", "upsample", "pseudo_label",
         "pseudo_label_tagged", "inpaint", "copypaste", "realism",
         "train_yolo@augmented", "train_yolo@selftrain", "train_yolo@copypaste", "train_yolo@inpaint", "evaluate")
REPORT_SUFFIXES = (".json", ".csv", ".md")


def dvc_stages(params: dict) -> dict[str, str]:
    """Stage name -> command, from dvc.yaml with `foreach` expanded (`${key}`, `${item}`)."""
    stages = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage["cmd"]
            continue
        items = stage["foreach"]
        if isinstance(items, str):  # ${section.key} of params
            items = params
            for part in re.fullmatch(r"\$\{(.+)\}", stage["foreach"]).group(1).split("."):
                items = items[part]
        for item in items:
            stages[f"{name}@{item}"] = stage["do"]["cmd"].replace("${key}", str(item)).replace("${item}", str(item))
    return stages


def ordered_stages(params: dict) -> list[tuple[str, str]]:
    stages = dvc_stages(params)
    ordered = [(name, cmd) for pattern in ORDER for name, cmd in stages.items()
               if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1]))]
    missing = set(stages) - {name for name, _ in ordered}
    if missing:
        raise SystemExit(f"gpu_check: dvc.yaml stages missing from ORDER: {sorted(missing)}")
    return ordered


def machine() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)",
            "gpus": torch.cuda.device_count() if cuda else 0,
            "bf16": bool(cuda and torch.cuda.is_bf16_supported())}


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def throughput(work: Path, times: pd.DataFrame) -> list[str]:
    """Training images/s of the UNet and the upsampler, generated images/s of `generate`, upsampled
    images/s of `upsample`, where they have run."""
    lines = []
    for model, folder in (("UNet", "unet"), ("upsampler", "upsampler")):
        loss = work / "reports" / folder / "loss.csv"
        rows = pd.read_csv(loss) if loss.is_file() else []
        if len(rows):
            lines.append(f"- {model} training: {rows['images_per_s'].tail(max(len(rows) // 2, 1)).mean():.0f} "
                         f"images/s (second half of the run)")
    generation = read_json(work / "reports" / "generation.json")
    generate_s = times.loc[times["stage"] == "generate", "seconds"]
    if generation and len(generate_s):
        overall = generation["overall"]
        n = overall["guided"]["n"] + overall["control"]["n"]
        lines.append(f"- generate: {n} images in {generate_s.iloc[0]:.0f} s, {n / generate_s.iloc[0]:.1f} images/s "
                     f"(stage wall time, model loading included)")
    upsample = read_json(work / "reports" / "upsample.json")
    upsample_s = times.loc[times["stage"] == "upsample", "seconds"]
    if upsample and len(upsample_s):
        lines.append(f"- upsample: {upsample['n_images']} images to {upsample['image_size']} px by "
                     f"{upsample['method']} ({upsample['settings']['steps']} DDIM steps) in {upsample_s.iloc[0]:.0f} s "
                     f"(stage wall time, the comparison included)")
    return lines


def key_figures(work: Path) -> list[str]:
    lines = []
    unet = read_json(work / "reports" / "unet" / "training.json")
    if unet:
        lines.append(f"- UNet: {unet['steps']} steps, {unet['n_parameters'] / 1e6:.1f} M parameters, "
                     f"{unet['image_size']} px, mixed precision {unet['mixed_precision']}, {unet['train_minutes']} min")
    upsample = read_json(work / "reports" / "upsample.json")
    if upsample:
        lines += [f"- upsampled images vs real ({method}): FD {m['fd']}, KID {m['kid_mean']}, edge energy "
                  f"x{m['edge_energy_vs_real']}" for method, m in upsample["methods"].items()]
    generation = read_json(work / "reports" / "generation.json")
    if generation:
        overall = generation["overall"]
        lines.append(f"- guidance: judge hit rate {overall['guided_paired']['hit_rate']:.3f} guided vs "
                     f"{overall['control']['hit_rate']:.3f} same-seed controls")
    for path in sorted((work / "metrics").glob("*.json")):
        figures = read_json(path)
        if figures and "mAP50" in figures:
            lines.append(f"- {path.stem}: test mAP50 {figures['mAP50']:.3f}, precision {figures['precision']:.3f}, "
                         f"recall {figures['recall']:.3f}")
    return lines


def write_progress(out: Path, work: Path, times: pd.DataFrame, setup: dict) -> None:
    times.to_csv(out / "stages.csv", index=False)
    reports = work / "reports"
    if reports.is_dir():
        for path in reports.rglob("*"):
            if path.is_file() and path.suffix in REPORT_SUFFIXES:
                target = out / "reports" / path.relative_to(reports)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    done = times[times["exit_code"] == 0]
    table = ["| stage | seconds | exit code |", "|---|---|---|"]
    table += [f"| {row.stage} | {row.seconds:.1f} | {row.exit_code} |" for row in times.itertuples()]
    text = [f"# gpu_check: {setup['machine']['device']}", "",
            f"profiles: {', '.join(setup['profiles']) or 'none'}; overrides: {', '.join(setup['sets']) or 'none'}",
            f"{len(done)} of {setup['n_stages']} stages done, {times['seconds'].sum() / 60:.1f} min", "",
            *table, "", "## Throughput", "", *throughput(work, times), "", "## Key figures", "", *key_figures(work), ""]
    (out / "summary.md").write_text("\n".join(text))


def stage_env() -> dict[str, str]:
    """Nothing may wait on the network: ultralytics, albumentations and the HF hub stay offline."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "YOLO_OFFLINE": "true", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="results folder (created; the work/ inside holds data and models)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--profiles", nargs="*", default=["one_gpu", "gpu_check"], help="pipelines/profiles names or files")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="section.key=value (YAML)")
    args = parser.parse_args(argv)
    out, work = args.out.resolve(), args.out.resolve() / "work"
    work.mkdir(parents=True, exist_ok=True)
    overrides = [load_profile(profile_path(name)) for name in args.profiles] + [parse_set(s) for s in args.sets]
    params_text = profiled_params(args.params.read_text(), overrides)
    (work / "params.yaml").write_text(params_text)
    shutil.copy2(work / "params.yaml", out / "params.yaml")
    params = yaml.safe_load(params_text)
    (work / params["dataset"]["unlabelled"]).mkdir(parents=True, exist_ok=True)  # as in a clone: empty, no pool
    stages = ordered_stages(params)
    setup = {"machine": machine(), "profiles": args.profiles, "sets": args.sets, "n_stages": len(stages)}
    (out / "machine.json").write_text(json.dumps(setup, indent=2))
    times = pd.DataFrame(columns=["stage", "seconds", "exit_code"])
    log = (out / "log.txt").open("a")
    for name, cmd in stages:
        command = shlex.split(cmd)
        command[0] = sys.executable if command[0] == "python" else command[0]
        print(f"gpu_check: {name}: {cmd}", flush=True)
        log.write(f"\n==== {name}: {cmd}\n")
        log.flush()
        started = time.perf_counter()
        code = subprocess.run(command, cwd=work, env=stage_env(), stdout=log, stderr=subprocess.STDOUT).returncode
        times.loc[len(times)] = [name, round(time.perf_counter() - started, 1), code]
        write_progress(out, work, times, setup)
        if code != 0:
            print(f"gpu_check: {name} failed with exit code {code}; its output is in {out / 'log.txt'}", file=sys.stderr)
            return 1
    print(f"gpu_check: {len(stages)} stages in {times['seconds'].sum() / 60:.1f} min -> {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
