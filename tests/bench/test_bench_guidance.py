"""bench/bench_guidance.py: the paired guided-vs-control table on tiny saved models."""

from tests.support import TINY_GENERATE, load_bench, write_params, write_tiny_models


def test_scale_zero_ties_every_pair_and_a_large_scale_is_tested(tiny_prepared, tmp_path, monkeypatch, capsys):
    write_tiny_models(tmp_path)
    write_params(tmp_path, generate=TINY_GENERATE)
    monkeypatch.chdir(tmp_path)
    load_bench("bench_guidance").main(["--per-class", "2", "--scales", "0", "1000"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 |") or line.startswith("| 1000 |")]
    assert len(lines) == 2 * 4  # 3 classes + overall per scale
    for line in lines[:4]:  # scale 0 renders exactly the controls: every pair ties
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "2" or cells[1] == "overall"
        assert cells[3] == cells[4] and cells[5] == "0 / 0" and cells[6] == "1.000"
    overall = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert overall[1] == "overall" and overall[2] == "6"
    wins, losses = (int(n) for n in overall[5].split(" / "))
    assert wins + losses <= 6
