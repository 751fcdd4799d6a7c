"""bench/bench_inpaint.py: one table row per setting, the UNet calls of the jump schedule, on tiny saved models."""

from tests.support import load_bench, write_params, write_tiny_patch_models


def test_one_row_per_setting_with_the_jump_schedules_unet_calls(tiny_prepared, tmp_path, monkeypatch, capsys):
    write_tiny_patch_models(tmp_path)
    write_params(tmp_path, patch_unet={"crops": {"px": 8}},
                 inpaint={"steps": 4, "jump_length": 2, "context_px": 1, "quota": {"bottle": 2, "can": 1}})
    monkeypatch.chdir(tmp_path)
    load_bench("bench_inpaint").main(["--windows", "3", "--jump-n-sample", "1", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 2
    calls = [int(row.strip("|").split("|")[3]) for row in rows]
    assert calls == [4, 6]  # 4 steps; one more pass over the jump at t 2 (2 steps back up and down again)
    kept = [float(row.strip("|").split("|")[6]) for row in rows]
    assert all(0 <= k <= 1 for k in kept)
