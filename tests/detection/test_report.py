"""detection.report: figures written, and a report.md that links them and marks every delta resolved or
unresolved."""

from __future__ import annotations

import dataclasses
import json

import pytest

from core.errors import StageError
from detection.evaluate import EvaluateSettings, training_record, void_comparisons
from detection.report import budget_line, verdict_lines, write_report
from tests.support import TINY_DETECTION, hand_evaluation, make_synthetic, settings


def render(tmp_path, found, pseudo: bool = True) -> str:
    evaluate_settings = settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"])
    figures = tmp_path / "figures"
    figures.mkdir()
    pseudo_dir = make_synthetic(tmp_path, n=2) if pseudo else tmp_path / "none"
    return write_report(hand_evaluation(found), evaluate_settings, pseudo_dir, figures, "figures", void={})


def cells(markdown: str, start: str) -> list[str]:
    row = next(line for line in markdown.splitlines() if line.startswith(start))
    return [c.strip() for c in row.strip("|").split("|")]


def test_report_has_seed_spreads_marked_deltas_and_the_figures(tmp_path):
    # `better` finds both classes with both seeds, `same` is the baseline: bottles only
    markdown = render(tmp_path, {"baseline": [[0], [0]], "better": [[0, 1], [0, 1]], "same": [[0], [0]]})
    for figure in ("pr_curves.png", "delta_map50.png", "test_detections.png", "pseudo_labels.png"):
        assert f"](figures/{figure})" in markdown and (tmp_path / "figures" / figure).read_bytes()[:4] == b"\x89PNG"
    assert "3 held-out test images" in markdown and "2 seed(s) (0, 1)" in markdown
    assert "covers both which test images" in markdown and "95% percentile interval" in markdown
    # overall: mean ± sample sd over the seeds, the seed count, each seed's mAP50
    assert cells(markdown, "| better |")[:6] == ["better", "2", "1.000 ± 0.000", "1.000 ± 0.000", "0.995 ± 0.000",
                                                 "0.995 ± 0.000"]
    assert cells(markdown, "| baseline |")[-1] == "0.497 / 0.497"
    # deltas: better's mAP50 is +0.4975 on every resample; same's is 0 on every resample
    assert cells(markdown, "| better | mAP50 |") == ["better", "mAP50", "+0.497", "[+0.497, +0.497]", "resolved"]
    assert cells(markdown, "| same | mAP50 |") == ["same", "mAP50", "+0.000", "[+0.000, +0.000]", "unresolved"]
    # the verdict lines open the report, before the tables
    head = markdown.split("## Overall")[0]
    assert ("- better: better than baseline, mAP50 +0.497 [+0.497, +0.497]; classes whose AP50 moved (resolved): "
            "can +0.995 [+0.995, +0.995]\n") in head
    assert ("- same: no resolved difference from baseline, mAP50 +0.000 [+0.000, +0.000]; no class's AP50 moved "
            "with a resolved interval\n") in head
    # per class AP50: can missed by the baseline, found by `better`; paper has no ground truth
    assert cells(markdown, "| can |") == ["can", "3", "0.000 ± 0.000", "0.995 ± 0.000", "0.000 ± 0.000",
                                          "+0.995 [+0.995, +0.995] resolved", "+0.000 [+0.000, +0.000] unresolved"]
    assert cells(markdown, "| paper |")[2:] == ["n/a"] * 5
    assert "PR curves (IoU 0.5, the detections of all 2 seeds pooled)" in markdown
    assert "Test detections (seed 0," in markdown


def test_report_says_plainly_when_no_delta_is_resolved(tmp_path):
    markdown = render(tmp_path, {"baseline": [[0], [0, 1]], "unstable": [[0, 1], [0]]}, pseudo=False)
    assert markdown.split("## Overall")[0].count("- unstable: no resolved difference from baseline, mAP50 +0.000") == 1
    assert "better than" not in markdown and "pseudo_labels.png" not in markdown
    assert cells(markdown, "| unstable | mAP50 |")[-1] == "unresolved"
    assert cells(markdown, "| baseline |")[4] == "0.746 ± 0.352"  # mAP50 of (0.4975, 0.995): sample sd 0.352


def test_report_shows_what_each_variant_trained_on(tmp_path):
    evaluate_settings = settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"])
    (tmp_path / "figures").mkdir()
    ev = dataclasses.replace(hand_evaluation({"baseline": [[0], [0]], "more": [[0, 1], [0, 1]]}),
                             training={"baseline": {"images": 135, "epochs": 150, "batches": 1350},
                                       "more": {"images": 188, "epochs": 112, "batches": 1344}})
    markdown = write_report(ev, evaluate_settings, tmp_path / "none", tmp_path / "figures", "figures", void={})
    assert cells(markdown, "| variant |")[:5] == ["variant", "seeds", "train images", "epochs", "batches"]
    assert cells(markdown, "| more |")[:5] == ["more", "2", "188", "112", "1344"]


def test_training_record_reads_train_yolo_params_and_names_a_bad_file(tmp_path):
    assert training_record(tmp_path / "absent") == {}
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "params.json").write_text(json.dumps({"n_images": {"train": 188, "val": 135}, "epochs": 15,
                                                            "batches": 180}))
    assert training_record(tmp_path / "v") == {"images": 188, "epochs": 15, "batches": 180}
    (tmp_path / "v" / "params.json").write_text(json.dumps({"n_images": {"val": 135}}))
    with pytest.raises(StageError, match=r"v/params.json: not a train_yolo params.json \('train'\); rerun train_yolo"):
        training_record(tmp_path / "v")


def test_a_variant_that_received_no_extra_images_and_a_weak_reference_are_called_void_at_the_top(tmp_path):
    # the baseline finds bottles only: mAP50 0.4975 (bottle 0.995, can 0)
    ev = dataclasses.replace(hand_evaluation({"baseline": [[0], [0]], "augmented": [[0, 1], [0, 1]],
                                               "selftrain": [[0], [0]]}),
                             training={"baseline": {"images": 8, "epochs": 2, "batches": 2},
                                       "augmented": {"images": 12, "epochs": 2, "batches": 2},
                                       "selftrain": {"images": 8, "epochs": 2, "batches": 2}})
    assert void_comparisons(ev, reference_floor=0.05) == {
        "selftrain": "`selftrain` received no extra images: it trained on the same 8 images as `baseline`, so its "
                     "delta is void"}
    void = void_comparisons(ev, reference_floor=0.5)
    assert set(void) == {"reference", "selftrain"}
    assert void["reference"].startswith("`baseline` reached mAP50 0.497, below the floor of 0.5")
    figures = tmp_path / "figures"
    figures.mkdir()
    markdown = write_report(ev, settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"]), tmp_path / "none",
                            figures, "figures", void)
    head = markdown.split("## Overall")[0]
    assert "**Warning: 2 comparison(s) here say nothing.**" in head
    assert f"- {void['reference']}.\n" in head and f"- {void['selftrain']}.\n" in head
    assert cells(markdown, "| augmented | mAP50 |")[-1] == "void"  # a failed reference voids every comparison
    assert f"- augmented: void, no verdict ({void['reference']})\n" in head and "better than" not in markdown
    only_selftrain = write_report(ev, settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"]),
                                  tmp_path / "none", figures, "figures", {"selftrain": void["selftrain"]})
    assert cells(only_selftrain, "| selftrain | mAP50 |")[-1] == "void"
    assert cells(only_selftrain, "| augmented | mAP50 |")[-1] == "resolved"
    assert "- augmented: better than baseline, mAP50 +0.497" in only_selftrain
    assert f"- selftrain: void, no verdict ({void['selftrain']})" in only_selftrain
    plain = write_report(ev, settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"]), tmp_path / "none",
                         figures, "figures", {})
    assert "Warning" not in plain


def test_a_failed_reference_is_void_even_at_nan():
    ev = hand_evaluation({"baseline": [[], []], "augmented": [[0], [0]]})  # the baseline finds nothing: mAP50 0
    assert void_comparisons(ev, reference_floor=0.05)["reference"].startswith("`baseline` reached mAP50 0.000")


def test_verdict_lines_say_worse_and_name_the_classes_no_variant_detects(tmp_path):
    ev = hand_evaluation({"baseline": [[0, 1], [0, 1]], "worse": [[0], [0]], "blind": [[], []]})
    lines = verdict_lines(ev, void={})
    assert lines[0] == ("worse: worse than baseline, mAP50 -0.497 [-0.497, -0.497]; classes whose AP50 moved "
                        "(resolved): can -0.995 [-0.995, -0.995]")
    assert lines[1].startswith("blind: worse than baseline, mAP50 -0.995")
    assert len(lines) == 2  # every class is found by some variant; paper has no test boxes and is never named
    # nobody finds a can: said in words, once, and the per-class table does not show +0.000 [+0.000, +0.000]
    ev = hand_evaluation({"baseline": [[0], [0]], "same": [[0], [0]]})
    lines = verdict_lines(ev, void={})
    assert lines == ["same: no resolved difference from baseline, mAP50 +0.000 [+0.000, +0.000]; no class's AP50 "
                     "moved with a resolved interval",
                     "not detected by any variant (AP50 0 for every seed): can"]
    (tmp_path / "figures").mkdir()
    markdown = write_report(ev, settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"]), tmp_path / "none",
                            tmp_path / "figures", "figures", void={})
    assert cells(markdown, "| can |")[-1] == "not detected"
    assert cells(markdown, "| bottle |")[-1] == "+0.000 [+0.000, +0.000] unresolved"


def test_the_report_states_the_budget_and_the_last_windows_gain(tmp_path):
    rule = {"epochs": None, "val_every": 10, "window": 40, "min_gain": 0.01, "min_epochs": 60, "max_epochs": 240}
    budget = {"epochs": 150, "batches_per_epoch": 9, "batches": 1350, "schedule_epochs": 240, "searched": True,
              "capped": False, "window_gain": 0.008, "rule": rule}
    line = budget_line(budget)
    assert line == ("every detector trained 1350 batches (the baseline's 150 epochs of 9 batches): the baseline's "
                    "plateau on val: its mean val mAP50 gained +0.008 over the last 40 epochs")
    assert budget_line({**budget, "capped": True, "window_gain": 0.05}).endswith(
        "gained +0.050 over the last 40 epochs, capped at max_epochs before a plateau")
    assert budget_line({**budget, "searched": False}).endswith("fixed in params.yaml (yolo.budget.epochs)")
    assert budget_line(None) == ""
    ev = dataclasses.replace(hand_evaluation({"baseline": [[0], [0]], "more": [[0, 1], [0, 1]]}), budget=budget)
    (tmp_path / "figures").mkdir()
    markdown = write_report(ev, settings(EvaluateSettings, "evaluate", **TINY_DETECTION["evaluate"]), tmp_path / "none",
                            tmp_path / "figures", "figures", void={})
    assert f"- {line}\n" in markdown.split("## Overall")[0]
