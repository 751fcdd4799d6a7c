"""bench/bench_precision.py: a row per workload with both rates and their ratio, on the tiny params' models."""

from tests.support import load_bench, write_params


def test_a_row_per_workload_with_fp32_and_bf16_rates(tmp_path, capsys):
    write_params(tmp_path)
    bench = load_bench("bench_precision")
    bench.main(["--root", str(tmp_path), "--steps", "1", "--only", "unet_train", "guidance", "upsampler_sample",
                "yolo_train"])
    out = capsys.readouterr().out
    assert out.startswith("`auto` here: ")
    rows = {line.split("|")[1].strip(): [float(v) for v in line.strip("|").split("|")[1:]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| workload")}
    assert list(rows) == ["unet_train", "guidance", "upsampler_sample", "yolo_train"]
    for fp32, bf16, ratio in rows.values():
        assert fp32 > 0 and bf16 > 0 and abs(ratio - bf16 / fp32) < 0.01 + 0.01 * ratio
