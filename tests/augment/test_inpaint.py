"""Insertion by guided RePaint: placement rules, the plan's canvases, rendering (known pixels exact, batch
independence, guidance on the hole), the keep rule, the layout's labels and the report's counts."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from augment import inpaint
from augment.generate import Models
from augment.patches import CropSettings
from augment.report import inpaint_section
from augment.settings import InpaintSettings
from core.errors import StageError
from pipelines import inpaint as pipeline
from scenes.boxes import disjoint
from scenes.canvases import Canvas
from scenes.prepared import load_manifest, read_yolo_labels
from tests.support import (
    TINY_CLASSES,
    TINY_SIZE,
    settings,
    tiny_noisy_classifier,
    tiny_unet,
    trained_scheduler,
    write_params,
    write_tiny_patch_models,
)

PX = 8  # window side in the tiny prepared images' 16 px; the tiny models work at 4 px (factor 2)


def crops(px: int = PX, small_px: int | None = None) -> CropSettings:
    return CropSettings(px=px, small_px=small_px, litter_share=0.5, jitter=0.25, min_inside=0.5, count=64, seed=0)


def inpaint_settings(**overrides) -> InpaintSettings:
    return settings(InpaintSettings, "inpaint", **{"context_px": 1, "hole_margin_px": 1, **overrides})


def canvas(boxes=(), classes=(), size: int = 32, kind: str = "train") -> Canvas:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    rgb = np.random.default_rng(0).integers(90, 110, (size, size, 3), dtype=np.uint8)
    return Canvas("c", Path("c.png"), kind, rgb, xyxy, np.array(classes, np.int64), "")


def test_hole_and_window_by_hand():
    hole, window = inpaint.hole_and_window((10, 12, 14, 15), 2, 8, 32, 32)
    assert hole == (8, 10, 16, 17) and window == (8, 10, 16, 18)
    hole, window = inpaint.hole_and_window((0, 29, 3, 32), 2, 8, 32, 32)  # clipped at the edges, window moved in
    assert hole == (0, 27, 5, 32) and window == (0, 24, 8, 32)


def test_object_size_keeps_real_sizes_and_shrinks_large_ones_keeping_the_aspect():
    rng = np.random.default_rng(0)
    assert inpaint.object_size(np.array([[5.0, 3.0]]), rng, 10) == (5, 3)
    assert inpaint.object_size(np.array([[40.0, 20.0]]), rng, 10) == (10, 5)


def test_placement_keeps_holes_off_known_boxes_windows_apart_and_off_same_class_litter():
    known = [[0, 0, 10, 10], [20, 20, 30, 26]]
    sizes = {0: np.array([[3.0, 4.0], [5.0, 2.0]]), 1: np.array([[2.0, 2.0]])}
    cfg = inpaint_settings(placement_tries=30)
    for seed in range(40):
        placed, unplaced = inpaint.place([(0, 0, 1), (1, 0, 2), (0, 1, 3)], canvas(known, [0, 1]), sizes,
                                        np.random.default_rng(seed), cfg, crops(), "x")
        assert len(placed) + len(unplaced) == 3
        for ins in placed:
            assert all(disjoint(ins.hole, b) for b in known)
            assert all(0 <= v <= 32 for v in ins.window) and ins.window[2] - ins.window[0] == PX
            assert ins.window[0] <= ins.hole[0] and ins.hole[2] <= ins.window[2]
            assert ins.window[1] <= ins.hole[1] and ins.hole[3] <= ins.window[3]
            same_class = [b for b, c in zip(known, [0, 1]) if c == ins.cls]
            assert all(disjoint(ins.window, b) for b in same_class)
        for i, a in enumerate(placed):
            assert all(disjoint(a.window, b.window) for b in placed[i + 1:])


def test_the_plan_fills_the_quota_on_train_and_clean_canvases_only_and_repeats(tiny_prepared):
    cfg = inpaint_settings(quota={"bottle": 3, "can": 2, "paper": 1}, objects_per_image=2)
    images, quota = inpaint.plan(tiny_prepared, cfg, TINY_CLASSES, crops())
    assert quota == {"bottle": 3, "can": 2, "paper": 1} and len(images) == 3
    frame = load_manifest(tiny_prepared)
    allowed = {r.image_id for r in frame.itertuples() if r.split == "train" or (r.split == "tagged" and not r.tags)}
    assert all(image.canvas.image_id in allowed for image in images)
    planned = [ins.cls for image in images for ins in image.insertions] + [c for i in images for c in i.unplaced]
    assert sorted(planned) == [0, 0, 0, 1, 1, 2]
    again, _ = inpaint.plan(tiny_prepared, cfg, TINY_CLASSES, crops())
    assert [(i.canvas.image_id, i.insertions) for i in again] == [(i.canvas.image_id, i.insertions) for i in images]


def test_known_pixels_are_the_model_pixels_whose_block_misses_the_hole():
    mask = np.zeros((8, 8), bool)
    mask[3:5, 2:3] = True  # touches model pixels (1, 1) and (2, 1) at factor 2
    expected = np.ones((4, 4), np.float32)
    expected[1, 1] = expected[2, 1] = 0
    np.testing.assert_array_equal(inpaint.known_at(mask, 4), expected)


def tiny_models() -> Models:
    return Models(tiny_unet(size=4), trained_scheduler(), tiny_noisy_classifier(TINY_CLASSES, 4, seed=1),
                  tiny_noisy_classifier(TINY_CLASSES, 4, seed=2))


def tiny_jobs(tiny_prepared: Path, cfg: InpaintSettings):
    images, _ = inpaint.plan(tiny_prepared, cfg, TINY_CLASSES, crops())
    return images, inpaint.jobs(images, cfg)


def test_rendering_changes_only_the_hole_and_does_not_depend_on_the_batch(tiny_prepared):
    cfg = inpaint_settings(quota={"bottle": 2, "can": 2, "paper": 1}, steps=3, jump_length=1, jump_n_sample=2,
                           guidance_scale=50.0, change_threshold=0.0)
    images, jobs = tiny_jobs(tiny_prepared, cfg)
    guided = [job for job in jobs if job.guided]
    rgb = {image.image_id: image.canvas.rgb for image in images}
    together = inpaint.render_batch(tiny_models(), cfg, guided, rgb)
    alone = [inpaint.render_batch(tiny_models(), cfg, [job], rgb)[0] for job in guided]
    for a, b in zip(together, alone):
        mask = inpaint.hole_mask(a.job.insertion)
        np.testing.assert_array_equal(a.window[~mask], a.before[~mask])  # the real pixels stay exactly
        assert np.abs(a.window.astype(int) - b.window.astype(int)).max() <= 1  # float rounding of batched convs
        assert a.judge_prob == pytest.approx(b.judge_prob, abs=1e-2)
    unguided = inpaint.render_batch(tiny_models(), cfg, [replace(job, guided=False) for job in guided], rgb)
    assert any((g.window != u.window).any() for g, u in zip(together, unguided))


def test_small_objects_get_windows_of_the_small_side_and_render_there_at_the_models_own_size():
    # the tiny models work at 4 px: a 4-px window is native, an 8-px one is downsampled 2x
    cfg = inpaint_settings(context_px=0, hole_margin_px=0, change_threshold=0.0, steps=2, jump_length=1,
                           jump_n_sample=1, guidance_scale=10.0)
    sizes = {0: np.array([[3.0, 3.0]]), 1: np.array([[6.0, 5.0]])}
    placed, unplaced = inpaint.place([(0, 0, 1), (1, 0, 2)], canvas(size=32), sizes, np.random.default_rng(0), cfg,
                                    crops(px=8, small_px=4), "x")
    assert not unplaced and [ins.window[2] - ins.window[0] for ins in placed] == [4, 8]
    assert [ins.window[2] - ins.window[0] for ins in inpaint.place(
        [(0, 0, 1)], canvas(size=32), sizes, np.random.default_rng(0), cfg, crops(px=8), "x")[0]] == [8]
    rgb = {"x": canvas(size=32).rgb}
    outcomes = inpaint.render_batch(tiny_models(), cfg, [inpaint.Job(ins, True) for ins in placed], rgb)
    for ins, out in zip(placed, outcomes):
        side = ins.window[2] - ins.window[0]
        assert out.window.shape == out.before.shape == (side, side, 3)
        mask = inpaint.hole_mask(ins)
        np.testing.assert_array_equal(out.window[~mask], out.before[~mask])
        assert (out.window[mask] != out.before[mask]).any()


def outcome(ins: inpaint.Insertion, reason, box=None, guided=True, prob=0.9) -> inpaint.Outcome:
    before = np.zeros((PX, PX, 3), np.uint8)
    return inpaint.Outcome(inpaint.Job(ins, guided), before, np.full((PX, PX, 3), 255, np.uint8), box, prob, reason)


def test_the_keep_rule_names_the_reason(tiny_prepared):
    cfg = inpaint_settings(quota={"bottle": 2, "can": 0, "paper": 0}, steps=2, jump_length=1, jump_n_sample=1,
                           change_threshold=300.0)  # nothing can change by more than 255 levels
    images, jobs = tiny_jobs(tiny_prepared, cfg)
    rgb = {image.image_id: image.canvas.rgb for image in images}
    assert {o.reason for o in inpaint.render_batch(tiny_models(), cfg, jobs, rgb)} == {"no change"}
    cfg = replace(cfg, change_threshold=0.0, min_box_px=PX + 1)
    assert {o.reason for o in inpaint.render_batch(tiny_models(), cfg, jobs, rgb)} <= {"too small", "no change"}


def test_the_layout_holds_the_canvas_boxes_then_the_kept_ones_and_undone_insertions_leave_the_canvas(
        tiny_prepared, tmp_path):
    cfg = inpaint_settings(quota={"bottle": 2, "can": 2, "paper": 2}, objects_per_image=2)
    images, jobs = tiny_jobs(tiny_prepared, cfg)
    outcomes = []
    for k, job in enumerate(job for job in jobs if job.guided):
        ins = job.insertion
        kept = k % 2 == 0
        outcomes.append(outcome(ins, None if kept else "judge", box=ins.box if kept else None))
    manifest = inpaint.write_layout(images, outcomes, tmp_path / "out", TINY_CLASSES)
    kept = {o.job.insertion.image_id for o in outcomes if o.kept}
    assert list(manifest["image_id"]) == [i.image_id for i in images if i.image_id in kept]
    by_id = {image.image_id: image for image in images}
    for row in manifest.itertuples():
        image = by_id[row.image_id]
        labels = read_yolo_labels(tmp_path / "out" / "labels" / f"{row.image_id}.txt")
        mine = [o for o in outcomes if o.job.insertion.image_id == row.image_id]
        assert len(labels) == len(image.canvas.cls) + sum(o.kept for o in mine) == row.n_boxes
        np.testing.assert_array_equal(labels[:len(image.canvas.cls), 0], image.canvas.cls)
        for line, o in zip(labels[len(image.canvas.cls):], [o for o in mine if o.kept]):
            x0, y0, x1, y1 = o.box
            expected = [o.job.insertion.cls, (x0 + x1) / 2 / TINY_SIZE, (y0 + y1) / 2 / TINY_SIZE,
                        (x1 - x0) / TINY_SIZE, (y1 - y0) / TINY_SIZE]
            np.testing.assert_allclose(line, expected, atol=1e-5)
        composed = np.asarray(Image.open(tmp_path / "out" / "images" / f"{row.image_id}.png"))
        for o in mine:
            x0, y0, x1, y1 = o.job.insertion.window
            mask = inpaint.hole_mask(o.job.insertion)
            window = composed[y0:y1, x0:x1]
            np.testing.assert_array_equal(window[mask], 255 if o.kept else image.canvas.rgb[y0:y1, x0:x1][mask])


def test_the_report_counts_add_up_and_pairs_guided_with_unguided(tiny_prepared):
    cfg = inpaint_settings(quota={"bottle": 3, "can": 1, "paper": 0}, control_per_class=2)
    images, jobs = tiny_jobs(tiny_prepared, cfg)
    outcomes = [outcome(job.insertion, None if job.guided else "judge", box=job.insertion.box, guided=job.guided)
                for job in jobs]
    result = inpaint.report(images, outcomes, {"bottle": 3, "can": 1, "paper": 0}, cfg, TINY_CLASSES, 2)
    placed = sum(len(i.insertions) for i in images)
    assert result["overall"]["placed"] == placed == result["overall"]["kept"]
    assert result["overall"]["placed"] + result["overall"]["unplaced"] == 4
    bottle = result["per_class"]["bottle"]["verified"]
    n_bottle_pairs = min(2, sum(ins.cls == 0 for i in images for ins in i.insertions))
    assert bottle["n_pairs"] == n_bottle_pairs and bottle["control"] == (0.0 if n_bottle_pairs else None)
    assert bottle["paired_test"]["wins"] == n_bottle_pairs and bottle["paired_test"]["losses"] == 0
    assert result["per_class"]["paper"]["placed"] == 0 and result["per_class"]["paper"]["verified"]["guided"] is None


def test_controls_repeat_the_first_insertions_of_each_class_with_their_seeds(tiny_prepared):
    cfg = inpaint_settings(quota={"bottle": 3, "can": 2, "paper": 1}, control_per_class=1)
    images, jobs = tiny_jobs(tiny_prepared, cfg)
    controls = [job.insertion for job in jobs if not job.guided]
    assert all(ins.k == 0 for ins in controls) and len({ins.cls for ins in controls}) == len(controls)
    guided = {(job.insertion.cls, job.insertion.k): job.insertion for job in jobs if job.guided}
    assert all(guided[ins.cls, ins.k] == ins for ins in controls)



STAGE_PARAMS = {**{name: {"crops": {"px": PX}} for name in ("patch_unet", "patch_classifier", "patch_judge")},
                "inpaint": {"steps": 2, "jump_length": 1, "context_px": 1, "change_threshold": 0.0,
                            "quota": {"bottle": 2, "can": 1, "paper": 1}, "control_per_class": 1}}


def test_the_stage_writes_the_layout_report_and_examples(tiny_prepared, tmp_path, monkeypatch):
    write_tiny_patch_models(tmp_path)
    write_params(tmp_path, **STAGE_PARAMS)
    monkeypatch.chdir(tmp_path)
    assert pipeline.main([]) == 0
    result = json.loads((tmp_path / "reports/inpaint.json").read_text())
    assert result["overall"]["planned"] == 4 and result["settings"]["steps"] == 2
    manifest = pd.read_csv(tmp_path / "data/pseudo/inpaint/manifest.csv", dtype={"image_id": str})
    assert len(manifest) == result["images_written"] and manifest["n_inserted"].sum() == result["overall"]["kept"]
    written = sorted(p.stem for p in (tmp_path / "data/pseudo/inpaint/images").glob("*.png"))
    assert written == sorted(manifest["image_id"])
    assert result["examples"] == (tmp_path / "reports/inpaint/examples.png").is_file()
    assert json.loads((tmp_path / "data/pseudo/inpaint/params.json").read_text())["crops"]["px"] == PX
    section = inpaint_section(tmp_path / "reports")
    assert "Litter inserted into real scenes" in section and "| overall | 4 |" in section


def test_a_missing_patch_model_names_its_stage_and_writes_nothing(tiny_prepared, tmp_path, monkeypatch, capsys):
    write_params(tmp_path, **STAGE_PARAMS)
    monkeypatch.chdir(tmp_path)
    assert pipeline.main([]) == 2
    assert capsys.readouterr().err == ("error: models/patch_unet/config.json: not found; "
                                       "run the train_patch_unet stage first\n")
    assert not (tmp_path / "data/pseudo").exists() and not (tmp_path / "reports/inpaint.json").exists()


def test_two_processes_render_the_same_insertions_as_one(tiny_prepared):
    cfg = inpaint_settings(quota={"bottle": 2, "can": 2, "paper": 1}, steps=2, jump_length=1, batch_size=2,
                           change_threshold=0.0)
    images, jobs = tiny_jobs(tiny_prepared, cfg)
    one = inpaint.render_shard(tiny_models(), cfg, jobs, images)
    two = inpaint.render_shard(tiny_models(), cfg, jobs, images, 0, 2) + inpaint.render_shard(tiny_models(), cfg, jobs,
                                                                                          images, 1, 2)
    key = lambda o: (o.job.guided, o.job.insertion.image_id, o.job.insertion.box)  # noqa: E731
    assert sorted(map(key, one)) == sorted(map(key, two)) and len(one) == len(jobs)
    for a, b in zip(sorted(one, key=key), sorted(two, key=key)):  # the same batches, so bit-identical
        np.testing.assert_array_equal(a.window, b.window)
        assert (a.box, a.judge_prob, a.reason) == (b.box, b.judge_prob, b.reason)


@pytest.mark.parametrize("box, prob, gain, reason", [
    (None, 0.9, [0.0, 0.8, 0.0], "no change"),
    ((0, 0, 3, 8), 0.9, [0.0, 0.8, 0.0], "too small"),
    ((0, 0, 4, 4), 0.4, [0.0, 0.4, 0.0], "judge"),
    ((0, 0, 4, 4), 0.6, [0.7, 0.5, 0.0], "another class"),  # it looks more like class 0 than it did
    ((0, 0, 4, 4), 0.6, [-0.2, 0.5, 0.1], None),  # class 0 already in the window scores high: not counted
])
def test_the_undo_reason_by_hand(box, prob, gain, reason):
    assert inpaint.undo_reason(box, 4, prob, torch.tensor(gain), 1) == reason


def test_settings_that_leave_no_room_for_an_object_are_an_error(tiny_prepared):
    with pytest.raises(StageError, match=r"inpaint.context_px 3 and hole_margin_px 1 leave no room for an object "
                                         r"in a 8-px window"):
        inpaint.plan(tiny_prepared, inpaint_settings(context_px=3), TINY_CLASSES, crops())
