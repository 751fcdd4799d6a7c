"""bench/bench_upsampler.py: the upsampler against bicubic resampling, on tiny data and models."""

import math

from tests.support import load_bench, write_params, write_tiny_models


def test_the_table_compares_bicubic_with_each_ddim_setting_and_the_grid_is_written(tiny_prepared, tmp_path,
                                                                                   monkeypatch, capsys):
    write_tiny_models(tmp_path)
    # the tiny prepared images: 16 px; the sections that state the two sizes agree
    write_params(tmp_path, dataset={"image_size": 16}, unet={"image_size": 4}, classifier={"image_size": 4},
                 judge={"image_size": 4}, upsampler={"image_size": 16, "low_res": 4})
    monkeypatch.chdir(tmp_path)
    load_bench("bench_upsampler").main(["--out", str(tmp_path / "out"), "--steps", "2", "--patch", "8",
                                        "--sample-steps", "2", "3", "--n-images", "4", "--set", "batch_size=4"])
    out = capsys.readouterr().out
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row[0].strip() for row in rows] == ["method", "bicubic", "upsampler, DDIM 2", "upsampler, DDIM 3"]
    for row in rows[1:]:
        psnr, edges, fd, kid, ms = (float(cell) for cell in row[1:])
        assert math.isfinite(psnr) and edges > 0 and fd >= 0 and ms >= 0
    assert "4 test images, 4 -> 16 px" in out and "trained 2 steps" in out
    assert (tmp_path / "out" / "comparison.png").is_file()


def test_the_upsampler_section_with_its_residual_target_and_the_raw_weights(tiny_prepared, tmp_path, monkeypatch,
                                                                            capsys):
    write_tiny_models(tmp_path)
    write_params(tmp_path, dataset={"image_size": 16}, unet={"image_size": 4}, classifier={"image_size": 4},
                 judge={"image_size": 4}, upsampler={"image_size": 16, "low_res": 4, "patch_size": 8, "batch_size": 4})
    monkeypatch.chdir(tmp_path)
    load_bench("bench_upsampler").main(["--out", str(tmp_path / "out"), "--section", "upsampler", "--steps", "2",
                                        "--sample-steps", "2", "--n-images", "4", "--raw"])
    out = capsys.readouterr().out
    assert "'target': 'residual'" in out and "trained 2 steps" in out
    methods = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert methods == ["method", "bicubic", "upsampler, DDIM 2", "upsampler (raw weights), DDIM 2"]
