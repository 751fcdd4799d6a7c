"""Does train_unet survive a busy CPU? The `unet` params' training step timed alone and beside a
second busy process, with torch's OpenMP threads spinning when idle (libgomp's default, "before")
and sleeping (`OMP_WAIT_POLICY=PASSIVE`, what every stage sets through `import pipelines`, "after").

    python bench/bench_busy_cpu.py [--params params.yaml] [--seconds 40] [--threads 2]

The busy process is another training of the same kind with the default policy and the same
thread count, like a second torch job started by hand. Every timed run is a fresh process, since
libgomp reads its policy once, when torch is imported. The step uses random images, so no stage
has to have run. Prints one row per policy; record the figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 2
POLICIES = {"spin (libgomp's default, before)": False, "sleep (as every stage sets it, after)": True}


def time_steps(params: str, seconds: float, threads: int, as_stage: bool) -> list[float]:
    """Seconds per training step of the `unet` params for `seconds` of wall time (warm-up steps
    included); `as_stage` imports `pipelines` before torch, as a stage does."""
    sys.path.insert(0, str(REPO))
    if as_stage:
        import pipelines  # noqa: F401
    import torch

    from augment.train_unet import UNetTrainConfig, noised_batch
    from augment.unet import build_scheduler, build_unet, diffusion_loss
    from core.params import read_params, section

    torch.set_num_threads(threads)
    cfg = section(UNetTrainConfig, "unet", read_params(params))
    unet = build_unet(cfg.model, cfg.schedule, cfg.image_size).train()
    scheduler = build_scheduler(cfg.schedule)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=gen) * 2 - 1
    step_times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        x0, x_t, t, noise = noised_batch(cfg, scheduler, images, gen)
        loss = diffusion_loss(scheduler, unet(x_t, t).sample, x0, x_t, t, noise, cfg.vlb_weight, cfg.snr_gamma)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - started)
    return step_times


def worker(args: argparse.Namespace, seconds: float, as_stage: bool, **popen) -> subprocess.Popen:
    """A timing process in an environment without OpenMP settings of the caller's."""
    command = [sys.executable, __file__, "--worker", "--params", args.params, "--seconds", str(seconds),
               "--threads", str(args.threads)] + (["--as-stage"] if as_stage else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    return subprocess.Popen(command, env=env, **popen)


def seconds_per_step(step_times: list[float], seconds: float) -> str:
    """Median after warm-up; a run too slow to finish its warm-up gives a bound."""
    timed = step_times[WARMUP_STEPS:]
    if len(timed) < 3:
        return f"> {seconds / max(len(step_times), 1):.2f}"
    return f"{statistics.median(timed):.2f}"


def measure(args: argparse.Namespace, as_stage: bool, busy: bool) -> str:
    background = None
    if busy:  # started first and outliving the timed run, so the timed run never sees an idle core
        background = worker(args, args.seconds + 60, as_stage=False, stdout=subprocess.DEVNULL)
        time.sleep(args.settle)
    try:
        timed = worker(args, args.seconds, as_stage, stdout=subprocess.PIPE, text=True)
        out, _ = timed.communicate()
    finally:
        if background is not None:
            background.kill()
            background.wait()
    if timed.returncode != 0:
        raise SystemExit(f"bench_busy_cpu: the timed run failed with exit code {timed.returncode}")
    return seconds_per_step(json.loads(out.splitlines()[-1]), args.seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--seconds", type=float, default=40.0, help="wall time of each timed run")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds the busy process runs before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both processes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--as-stage", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(time_steps(args.params, args.seconds, args.threads, args.as_stage)))
        return
    print(f"train_unet step, {args.threads} torch threads, {os.cpu_count()} CPUs, {args.seconds:.0f} s per run")
    print("| idle OpenMP threads | alone, s/step | beside a busy process, s/step | beside / alone |")
    print("|---|---|---|---|")
    for name, as_stage in POLICIES.items():
        alone, beside = measure(args, as_stage, busy=False), measure(args, as_stage, busy=True)
        ratio = float(beside.lstrip("> ")) / float(alone)
        print(f"| {name} | {alone} | {beside} | {'> ' if beside.startswith('>') else ''}{ratio:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
