"""augment.report: the synthetic-image part of report.md from generate / gen_metrics / sweep outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from augment.report import guidance_table, synthetic_section
from core.errors import StageError


def rates(n, hit_rate, judge_p):
    return {"n": n, "hit_rate": hit_rate, "mean_judge_prob": judge_p, "mean_target_prob": judge_p}


def mcnemar(wins, losses, p_value):
    return {"wins": wins, "losses": losses, "p_value": p_value}


def generation_json():
    per_class = {
        "bottle": {"guided": rates(10, 0.9, 0.8), "guided_paired": rates(4, 0.75, 0.7), "control": rates(4, 0.25, 0.3),
                   "paired_test": mcnemar(2, 0, 0.25)},
        "can": {"guided": rates(0, None, None), "guided_paired": rates(0, None, None), "control": rates(4, 0.5, 0.5),
                "paired_test": mcnemar(0, 0, 1.0)},
    }
    return {"quota": {"bottle": 10, "can": 0}, "hit_threshold": 0.5,
            "settings": {"sampler": "ddim", "steps": 25, "guidance_scale": 30.0},
            "overall": {"guided": rates(10, 0.9, 0.8), "guided_paired": rates(4, 0.75, 0.7),
                        "control": rates(8, 0.375, 0.4), "paired_test": mcnemar(2, 0, 0.25)},
            "per_class": per_class}


def metric(n_gen, fd):
    return {"n_generated": n_gen, "n_real": 20, "fd": fd, "kid_mean": 0.1, "precision": 0.9, "recall": 0.5,
            "judge_is": 1.2, "judge_hit_rate": 0.9}


def test_guidance_table_gain_is_paired_minus_control_and_none_where_no_images():
    table = guidance_table(generation_json()).set_index("target")
    assert table.loc["bottle", "hit-rate gain"] == pytest.approx(0.5)
    assert table.loc["overall", "hit-rate gain"] == pytest.approx(0.375)
    assert pd.isna(table.loc["can", "hit-rate gain"]) and table.loc["can", "guided images"] == 0


def test_section_has_all_three_parts_and_links_the_tradeoff_figure(tmp_path):
    (tmp_path / "generation.json").write_text(json.dumps(generation_json()))
    (tmp_path / "gen_metrics.json").write_text(json.dumps({
        "extractor": "judge", "real_split": "test", "note": "FD is biased at small n.",
        "sets": {"guided": {"overall": metric(10, 3.5), "per_class": {"bottle": metric(10, 4.25)}}}}))
    (tmp_path / "sweep").mkdir()
    pd.DataFrame({"guidance_scale": [0.0, 2.5], "fd": [1.0, 2.0], "judge_hit_rate": [0.5, 0.75]}).to_csv(
        tmp_path / "sweep" / "tradeoff.csv", index=False)
    (tmp_path / "sweep" / "guidance_tradeoff.png").write_bytes(b"png")
    text = synthetic_section(tmp_path)
    assert "guidance scale 30.0" in text and "p(target) >= 0.5" in text
    assert "| bottle | 10 | 0.900 | 4 | 0.750 | 0.250 | 0.500 | 2 / 0 | 0.250 | 0.700 | 0.300 |" in text
    assert "| can | 0 | n/a | 0 | n/a | 0.500 | n/a | 0 / 0 | 1.000 | n/a | 0.500 |" in text
    assert "Features: `judge`; real reference: the `test` split." in text
    assert "| guided | bottle | 10 | 20 | 4.250 |" in text
    assert "| 2.5 | 2.000 | 0.750 |" in text
    assert "![guidance-scale trade-off](sweep/guidance_tradeoff.png)" in text


def test_missing_outputs_are_said_not_fatal_and_malformed_json_is_one_line(tmp_path):
    text = synthetic_section(tmp_path)
    assert "`generation.json` not found" in text and "trade-off" not in text
    (tmp_path / "generation.json").write_text("{oops")
    with pytest.raises(StageError, match=r"generation.json: malformed JSON"):
        synthetic_section(tmp_path)


def test_the_upsampler_part_puts_the_method_used_first_beside_plain_resampling(tmp_path):
    def method(fd, edges):
        return {"n_generated": 12, "fd": fd, "kid_mean": 0.25, "precision": 0.5, "recall": 0.75,
                "edge_energy_vs_real": edges}

    (tmp_path / "upsample.json").write_text(json.dumps({
        "method": "diffusion", "image_size": 128, "n_images": 12, "real_split": "test", "extractor": "judge",
        "note": "Ranks the methods.", "methods": {"bicubic": method(2.5, 0.5), "diffusion": method(1.5, 1.0)}}))
    text = synthetic_section(tmp_path)
    assert "## Upsampler vs plain resampling (`upsample.json`)" in text
    assert "The 12 guided images brought to 128 px, against the real `test` images" in text and "Ranks the methods." in text
    lines = [line for line in text.splitlines() if line.startswith("| diffusion") or line.startswith("| bicubic")]
    assert lines == ["| diffusion (used) | 12 | 1.500 | 0.250 | 0.500 | 0.750 | 1.000 |",
                     "| bicubic | 12 | 2.500 | 0.250 | 0.500 | 0.750 | 0.500 |"]


def realism_json():
    def figures(objects, agreement, box_iou, crop_fd, passed):
        return {"objects": objects, "agreement": agreement, "box_iou": box_iou, "crop_fd": crop_fd, "passed": passed}

    return {"settings": {"min_agreement": 0.5, "iou": 0.5}, "predict": {"conf": 0.25}, "seeds": [0, 1, 2],
            "extractor": "judge", "real_split": "test",
            "sources": {
                "synthetic": {"variant": "augmented", "images": 10, "gated_out": ["a", "b", "c"],
                              "per_class": {"bottle": figures(4, 0.25, None, 8.0, False),
                                            "can": figures(6, 0.9, None, 1.2, True)}},
                "inpaint": {"variant": "inpaint", "images": 5, "gated_out": [],
                            "per_class": {"bottle": figures(0, None, None, None, None),
                                          "can": figures(3, 0.6667, 0.8, 1.5, True)}}}}


def test_the_detector_part_gives_agreement_box_iou_crop_fd_and_the_gate_per_source_and_class(tmp_path):
    (tmp_path / "realism.json").write_text(json.dumps(realism_json()))
    (tmp_path / "copypaste.json").write_text(json.dumps({"form": "box"}))
    text = synthetic_section(tmp_path)
    assert "## Judged by the detector" in text and "at IoU >= 0.5" in text and "conf >= 0.25" in text
    assert "- `augmented`: left out bottle (3 of its 10 images)\n- `inpaint`: every class passed\n" in text
    assert "Copy-paste ran with box crops, feathered at the edge (no masks in the data)." in text
    assert "| generated scenes | augmented | bottle | 4 | 0.250 | n/a | 8.000 | left out |" in text
    assert "| insertions | inpaint | bottle | 0 | n/a | n/a | n/a | no objects |" in text
    assert "| insertions | inpaint | can | 3 | 0.667 | 0.800 | 1.500 | passed |" in text
    (tmp_path / "realism.json").unlink()
    assert "Judged by the detector" not in synthetic_section(tmp_path)
