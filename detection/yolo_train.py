"""Training YOLO detectors offline (ultralytics): the CPU trainer, a training that follows its
`detection.budget.Plan`, seeds in parallel processes, and the baseline's seeds that find the budget.

Training data reach ultralytics as a throw-away YOLO layout (`detection.yolo.write_dataset_view`);
each run's files are copied out without what differs between identical trainings
(`reproducible_copy`), so DVC hashes the same weights the same. ultralytics' own log (its argument
dump, model summary and progress bars, which interleave when seeds train side by side) is held at
warnings; each training prints a few lines of its own, labelled with its variant and seed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from core.errors import StageError
from core.io import scratch_dir, write_json
from detection.budget import (
    ABORT_FILE,
    BUDGET_FILE,
    PeerCurves,
    Plan,
    budget_record,
    mean_curve,
    plateau_epoch,
    read_budget,
    scaled_plan,
)
from detection.yolo import TrainSettings, YoloParams, resolve_device, seed_dir, ultralytics_offline


@functools.cache
def cpu_trainer(channels_last: bool) -> type:
    """Ultralytics' detection trainer, on CPU: the model in channels-last (NHWC) memory format if
    asked, bf16 autocast when `amp` is bf16, and a fused Adam(W) step.

    Ultralytics converts the model to NHWC on CUDA only (`channels_last`); on a CPU, oneDNN runs a
    YOLOv8n training step at 128 px faster in NHWC (bench/RESULTS.md). The conversion happens where
    ultralytics' own does, before the EMA copy and the optimizer are made; checkpoints are saved
    NCHW either way. Its bf16 autocast refuses a CPU (CUDA only), although a CPU with bf16
    instructions runs the same step faster (bench/bench_precision.py); the `autocast` that
    ultralytics' trainer module calls is widened, for this process, to allow that one case, and
    nothing else changes. CPU only, so never needed in a DDP subprocess (which must import its
    trainer by name).
    """
    import torch
    from ultralytics.engine import trainer as engine
    from ultralytics.models.yolo.detect import DetectionTrainer

    if not getattr(engine.autocast, "allows_cpu_bf16", False):
        ultralytics_autocast = engine.autocast

        def autocast(enabled: Any, device: str = "cuda"):
            if device == "cpu" and enabled is torch.bfloat16:
                return torch.autocast("cpu", dtype=torch.bfloat16)
            return ultralytics_autocast(enabled, device=device)

        autocast.allows_cpu_bf16 = True
        engine.autocast = autocast

    class CpuTrainer(DetectionTrainer):
        def set_model_attributes(self) -> None:
            super().set_model_attributes()
            if channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)

        def build_optimizer(self, *args, **kwargs):
            # torch steps Adam(W) one tensor at a time on CPU unless told otherwise; fused is one kernel
            optimizer = super().build_optimizer(*args, **kwargs)
            if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
                for group in optimizer.param_groups:
                    group.update(fused=True, foreach=False)
            return optimizer

    return CpuTrainer


@contextlib.contextmanager
def quiet_ultralytics() -> Iterator[None]:
    """ultralytics' log at warnings (its progress bars follow the level) while a training runs."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def progress_line(label: str, epoch: int, epochs: int, losses: Any, metrics: dict[str, Any] | None) -> str:
    """`<label>: epoch 20/150, train loss 3.412, val mAP50 0.369` (the mAP only after a validation);
    `losses`: the epoch's mean loss items (a mapping in recent ultralytics, a tensor before)."""
    total = sum(float(v) for v in (losses.values() if isinstance(losses, dict) else losses))
    line = f"{label}: epoch {epoch}/{epochs}, train loss {total:.3f}"
    return line + (f", val mAP50 {float(metrics['metrics/mAP50(B)']):.3f}" if metrics else "")


def planned_trainer(plan: Plan, base: type, label: str = "yolo") -> type:
    """`base` (ultralytics' detection trainer or `cpu_trainer`) following `plan`: it stops after
    `plan.stop_epoch` epochs of a schedule `plan.schedule_epochs` long, validates only when it stops
    or, while searching the budget, every `val_every` epochs, where it publishes its val mAP50 to its
    peers and stops with them at the plateau of their mean curve (`detection.budget`). The last
    validation always counts as the best, so best.pt holds the final weights, as with `val: false`.
    The weights after each epoch in `plan.snapshots` are kept as `epoch_<N>.pt` (learning curves).
    It prints a `progress_line` after each validation and every tenth of its epochs.
    """
    report_every = max(1, plan.stop_epoch // 10)

    def stop_at_plan(trainer) -> None:
        if trainer.epoch + 1 >= plan.stop_epoch:
            trainer.stop = True

    def keep_snapshot(trainer) -> None:
        if trainer.epoch + 1 in plan.snapshots and trainer.last.is_file():
            shutil.copyfile(trainer.last, trainer.wdir / f"epoch_{trainer.epoch + 1}.pt")

    def report(trainer) -> None:
        if trainer.reported_last:  # ultralytics' final_eval calls the epoch-end callbacks once more
            return
        epoch = trainer.epoch + 1
        validated = trainer.validated_at == epoch
        if validated or epoch % report_every == 0 or trainer.stop:
            print(progress_line(label, epoch, plan.stop_epoch, trainer.tloss, trainer.metrics if validated else None),
                  flush=True)
        trainer.reported_last = trainer.stop

    class PlannedTrainer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.validated_at, self.reported_last = 0, False
            self.add_callback("on_train_epoch_end", stop_at_plan)
            self.add_callback("on_fit_epoch_end", keep_snapshot)
            self.add_callback("on_fit_epoch_end", report)

        def save_model(self) -> bool:
            # a checkpoint only where one is read (ultralytics writes a full one every epoch otherwise)
            epoch = self.epoch + 1
            if self.stop or epoch >= self.epochs or epoch in plan.snapshots:
                return super().save_model()
            return False

        def validate(self):
            epoch = self.epoch + 1
            searching = plan.search is not None
            if not (self.stop or epoch >= self.epochs or (searching and epoch % plan.search.val_every == 0)):
                return self.metrics, None
            metrics, _ = super().validate()
            self.validated_at = epoch
            self.best_fitness = float(epoch)
            if searching:
                peers = PeerCurves(plan.peers_dir, self.args.seed, plan.peers)
                peers.publish(epoch, float(metrics["metrics/mAP50(B)"]))
                self.stop |= plateau_epoch(mean_curve(peers.wait(epoch)), plan.search) is not None
            return metrics, float(epoch)

    return PlannedTrainer


def train(settings: TrainSettings, plan: Plan, seed: int, data_yaml: Path, out_dir: Path,
          log_dir: Path, label: str = "yolo") -> dict[str, Any]:
    """Train one YOLO model as `plan` says: `best.pt` (the final weights), `last.pt`, `results.csv`,
    `args.yaml` land in `out_dir` as the same training always writes them (`reproducible_copy`),
    the per-epoch log with its timings in `log_dir/results.csv`. Returns {"epochs": the epochs it
    trained, "metrics": ultralytics' final validation metrics (of best.pt on val) as plain floats}.
    Its progress lines read `<label> seed <seed>: ...`.
    """
    ultralytics = ultralytics_offline()
    device = resolve_device(settings.device)
    if settings.amp == "auto":
        raise ValueError("train: resolve amp auto first (pipelines.train_yolo.resolve_amp)")
    on_cpu = device == "cpu"  # channels-last and bf16 are then our trainer's: ultralytics would ignore or refuse them
    ddp = isinstance(device, str) and "," in device
    if ddp and (plan.search or plan.stop_epoch != plan.schedule_epochs):
        raise StageError("params.yaml: yolo.budget: a DDP training runs ultralytics' own trainer and schedule; set "
                         "yolo.budget.epochs to a number")
    with scratch_dir("yolo_run_") as run_root:
        model = ultralytics.YOLO(settings.model)
        args = dict(data=str(data_yaml), epochs=plan.schedule_epochs, imgsz=settings.imgsz, batch=settings.batch,
                    seed=seed, deterministic=True, device=device, patience=plan.schedule_epochs + 1,
                    workers=settings.workers, amp=settings.amp, channels_last=settings.channels_last and not on_cpu,
                    plots=settings.plots, pretrained=settings.model.endswith(".pt"), val=plan.search is not None,
                    project=str(run_root), name="run", exist_ok=True, verbose=False)
        trainer = None
        if not ddp:
            from ultralytics.models.yolo.detect import DetectionTrainer

            trainer = planned_trainer(plan, cpu_trainer(settings.channels_last) if on_cpu else DetectionTrainer,
                                      f"{label} seed {seed}")
        with quiet_ultralytics():
            model.train(trainer=trainer, **{**args, **settings.extra})
        run, scratch = run_root / "run", {run_root: "<run>", data_yaml.parent: "<data>"}
        for name in ("weights/best.pt", "weights/last.pt", "results.csv", "args.yaml"):
            if not (run / name).is_file():
                raise StageError(f"{run / name}: ultralytics wrote no such file; training failed")
            reproducible_copy(run / name, out_dir / Path(name).name, scratch)
        shutil.copyfile(run / "results.csv", log_dir / "results.csv")
        for snapshot in (run / "weights").glob("epoch_*.pt"):  # plan.snapshots
            reproducible_copy(snapshot, out_dir / snapshot.name, scratch)
        if settings.plots:
            for png in run.glob("*.png"):
                shutil.copyfile(png, out_dir / png.name)
        metrics = getattr(model.trainer, "metrics", {}) or {}
        return {"epochs": int(model.trainer.epoch) + 1, "metrics": {k: float(v) for k, v in metrics.items()}}


def train_seeds(params: YoloParams, plans: dict[int, Plan], data_yaml: Path, out_dir: Path, log_dir: Path,
                torch_threads: int, label: str = "yolo") -> dict[int, dict[str, Any]]:
    """Train every seed of `plans` into `seed_dir(out_dir, s)` (and its log into `seed_dir(log_dir, s)`);
    returns each seed's `train` record.

    `params.parallel` 1: one after another in this process, on its torch threads. Above 1: that
    many at once, each in a fresh process on max(1, torch_threads // parallel) threads. A small
    YOLO on a small CPU gains little from a second thread (YOLOv8n at 128 px on 2 cores), while a
    second training beside it runs at full speed, so seeds in parallel use the cores better. Each
    training depends only on its seed, plan and thread count, never on its neighbours. Seeds that
    search the budget together must all be in one call with `parallel` at least their number.
    """
    jobs = {seed: (params.train, plan, seed, data_yaml, seed_dir(out_dir, seed), seed_dir(log_dir, seed), label)
            for seed, plan in plans.items()}
    for job in jobs.values():
        job[4].mkdir()
        job[5].mkdir()
    if params.parallel == 1:
        return {seed: train(*job) for seed, job in jobs.items()}
    threads = max(1, torch_threads // params.parallel)
    with ProcessPoolExecutor(min(params.parallel, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=use_torch_threads, initargs=(threads,)) as pool:
        futures = {seed: pool.submit(train, *job) for seed, job in jobs.items()}
        wait(futures.values(), return_when=FIRST_EXCEPTION)
        failed = [f for f in futures.values() if f.done() and f.exception() is not None]
        if failed:
            for plan in plans.values():  # peers searching with a failed training stop waiting for it
                if plan.peers_dir:
                    (Path(plan.peers_dir) / ABORT_FILE).touch()
        try:
            return {seed: future.result() for seed, future in futures.items()}
        except BrokenProcessPool as err:
            raise StageError(f"train_yolo: a training process died ({err}); see the log above") from None


def use_torch_threads(threads: int) -> None:
    """A fresh training process's thread count, set before anything loads torch (`launch.torch_threads`)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def reproducible_copy(source: Path, target: Path, scratch: dict[Path, str]) -> None:
    """Copy a run file without what differs between identical trainings: the date, git details,
    timings and the random scratch folders (replaced by `scratch[folder]`), so DVC hashes the same
    weights the same and the stages after it stay cached."""
    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for folder, name in scratch.items():
                value = value.replace(str(folder), name)
            return value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value

    if source.suffix == ".pt":
        import torch

        checkpoint = torch.load(source, map_location="cpu", weights_only=False)  # our own training run's file
        checkpoint.update(date=None, git=None, train_args=scrub(checkpoint.get("train_args")),
                          train_results={k: v for k, v in (checkpoint.get("train_results") or {}).items()
                                         if k != "time"})
        if isinstance(getattr(checkpoint.get("model"), "args", None), dict):
            checkpoint["model"].args = scrub(checkpoint["model"].args)
        torch.save(checkpoint, target)
    elif source.suffix == ".csv":
        frame = pd.read_csv(source)
        frame.drop(columns=[c for c in frame.columns if c.strip() == "time"]).to_csv(target, index=False)
    else:
        target.write_text(scrub(source.read_text()))


def train_baseline(settings: YoloParams, data_yaml: Path, out_dir: Path, report_dir: Path, n_train: int,
                   threads: int, label: str = "yolo") -> tuple[dict, dict]:
    """The baseline's seeds: the first `parallel` find the budget together, the rest train it.
    Returns each seed's training record and the budget record."""
    rule, seeds = settings.budget, settings.seeds
    with scratch_dir("yolo_peers_") as peers_dir:
        deciders = seeds[:settings.parallel] if rule.searched else ()
        first = {s: Plan(rule.max_epochs, rule.max_epochs, rule, str(peers_dir), deciders) for s in deciders} \
            or {s: Plan(rule.epochs, rule.epochs) for s in seeds}
        records = train_seeds(settings, first, data_yaml, out_dir, report_dir, threads, label)
        curves = PeerCurves(peers_dir, seeds[0], deciders).curves()
    epochs = {r["epochs"] for r in records.values()}
    if len(epochs) != 1:
        raise StageError(f"train_yolo@baseline: the seeds searching the budget stopped at different epochs {epochs}")
    budget = budget_record(rule, n_train, settings.train.batch, epochs.pop(), curves)
    rest = {s: Plan(budget["schedule_epochs"], budget["epochs"]) for s in seeds if s not in records}
    records |= train_seeds(settings, rest, data_yaml, out_dir, report_dir, threads, label) if rest else {}
    return records, budget


def train_variant(variant: str, settings: YoloParams, data_yaml: Path, out_dir: Path, log_dir: Path, n_train: int,
                  yolo_dir: Path, threads: int) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """Every seed of a variant on `n_train` images, each seed's metrics.json written beside its
    weights. The baseline finds the budget (`train_baseline`) and writes it to BUDGET_FILE in
    `out_dir`; any other variant trains the budget in `yolo_dir`/baseline (`scaled_plan`). Returns
    each seed's `train` record and the budget record the baseline found (None for the others)."""
    label = f"train_yolo@{variant}"
    if variant == "baseline":
        records, budget = train_baseline(settings, data_yaml, out_dir, log_dir, n_train, threads, label)
        write_json(out_dir / BUDGET_FILE, budget)
    else:
        budget = None
        plan = scaled_plan(read_budget(yolo_dir / "baseline"), n_train, settings.train.batch, settings.equal_steps)
        records = train_seeds(settings, {s: plan for s in settings.seeds}, data_yaml, out_dir, log_dir, threads, label)
    for seed, record in records.items():
        write_json(seed_dir(out_dir, seed) / "metrics.json", record["metrics"])
    return records, budget
