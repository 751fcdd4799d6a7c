"""bench/bench_busy_cpu.py: the train_unet step timed alone and beside a busy process, per OpenMP wait policy."""

import argparse

from tests.support import load_bench, write_params


def test_a_run_too_slow_to_time_is_reported_as_a_bound():
    bench = load_bench("bench_busy_cpu")
    assert bench.seconds_per_step([1.0, 1.0, 0.5, 0.7, 0.6], seconds=4) == "0.60"
    assert bench.seconds_per_step([3.0, 2.0, 2.5], seconds=8) == "> 2.67"
    assert bench.seconds_per_step([], seconds=8) == "> 8.00"


def test_the_timed_step_trains_the_params_unet_for_the_given_time(tmp_path):
    write_params(tmp_path)
    step_times = load_bench("bench_busy_cpu").time_steps(str(tmp_path / "params.yaml"), seconds=1.0, threads=1, as_stage=False)
    assert len(step_times) >= 1 and all(0 < t < 5 for t in step_times)


def test_a_timed_run_beside_a_busy_process_gives_its_step_time(tmp_path):
    write_params(tmp_path)
    args = argparse.Namespace(params=str(tmp_path / "params.yaml"), seconds=3.0, settle=0.5, threads=1)
    assert float(load_bench("bench_busy_cpu").measure(args, as_stage=True, busy=True).lstrip("> ")) > 0


def test_the_table_has_both_policies_alone_and_beside(monkeypatch, capsys):
    bench = load_bench("bench_busy_cpu")
    times = {(False, False): "1.00", (False, True): "> 4.50", (True, False): "1.20", (True, True): "1.80"}
    monkeypatch.setattr(bench, "measure", lambda args, as_stage, busy: times[as_stage, busy])
    bench.main(["--seconds", "9"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| s")]
    assert rows == ["| spin (libgomp's default, before) | 1.00 | > 4.50 | > 4.5x |",
                    "| sleep (as every stage sets it, after) | 1.20 | 1.80 | 1.5x |"]
