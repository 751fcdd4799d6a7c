"""bench/bench_inpaint.py: one table row per setting, the UNet calls of the jump schedule, on tiny saved models."""

from tests.support import TINY_CLASSES, load_bench, tiny_noisy_classifier, tiny_unet, trained_scheduler, write_params


def test_one_row_per_setting_with_the_jump_schedules_unet_calls(tiny_prepared, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    tiny_unet(size=4).save_pretrained(models / "patch_unet")
    trained_scheduler().save_pretrained(models / "patch_unet" / "scheduler")
    tiny_noisy_classifier(TINY_CLASSES, 4, seed=1).save_pretrained(models / "patch_classifier")
    tiny_noisy_classifier(TINY_CLASSES, 4, seed=2).save_pretrained(models / "patch_judge")
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
