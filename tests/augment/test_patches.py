"""Crops for the patch models: which images, where, their labels by the inside-share rule, determinism, errors."""

import numpy as np
import pytest

from augment.patches import CropSettings, crop_origin, inside_share, load_crop_set, load_training_set, window_side
from augment.train_classifier import ClassifierTrainConfig
from core.errors import StageError
from scenes.boxes import read_labels_px
from scenes.prepared import load_manifest, read_rgb, resample_rgb
from tests.support import TINY_CLASSES, TINY_SIZE, settings


def crops(**overrides) -> CropSettings:
    values = {"px": 8, "small_px": None, "litter_share": 0.5, "jitter": 0.25, "min_inside": 0.5, "count": 40, "seed": 0}
    return CropSettings(**{**values, **overrides})


def origin(crop_id: str) -> tuple[str, int, int]:
    image_id, _, xy = crop_id.partition("@")
    x0, y0 = map(int, xy.split(","))
    return image_id, x0, y0


def test_inside_share_and_crop_origin_by_hand():
    boxes = np.array([[0, 0, 4, 4], [6, 6, 10, 8], [20, 20, 22, 22]], np.float32)
    np.testing.assert_allclose(inside_share(boxes, (2, 2, 8, 8)), [4 / 16, 4 / 8, 0.0])
    assert crop_origin(10.0, 8, 32) == 6 and crop_origin(1.0, 8, 32) == 0 and crop_origin(31.0, 8, 32) == 24


def test_crops_come_from_fully_boxed_images_only_and_hold_their_pixels(tiny_prepared):
    data = load_crop_set(tiny_prepared, ("train", "tagged"), 8, crops())
    frame = load_manifest(tiny_prepared, ("train", "tagged"))
    allowed = {r.image_id: r.abspath for r in frame.itertuples() if r.split == "train" or not r.tags}
    assert data.images.shape == (40, 3, 8, 8) and data.targets.shape == (40, len(TINY_CLASSES))
    for crop_id, image in zip(data.image_ids, data.images):
        image_id, x0, y0 = origin(crop_id)
        assert image_id in allowed, f"{image_id}: a tagged image with litter has no boxes to cut by"
        assert 0 <= x0 <= TINY_SIZE - 8 and 0 <= y0 <= TINY_SIZE - 8
        rgb = read_rgb(allowed[image_id])
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), rgb[y0:y0 + 8, x0:x0 + 8])


@pytest.mark.parametrize("litter_share", [0.0, 1.0])
def test_a_crops_labels_are_the_classes_of_the_boxes_mostly_inside_it(tiny_prepared, litter_share):
    data = load_crop_set(tiny_prepared, ("train", "tagged"), 8, crops(litter_share=litter_share, count=60))
    paths = {r.image_id: r.abspath for r in load_manifest(tiny_prepared, ("train", "tagged")).itertuples()}
    labelled = 0
    for crop_id, target in zip(data.image_ids, data.targets):
        image_id, x0, y0 = origin(crop_id)
        expected = np.zeros(len(TINY_CLASSES), np.float32)
        if image_id.startswith("train"):
            xyxy, cls = read_labels_px(paths[image_id], TINY_SIZE, TINY_SIZE)
            expected[cls[inside_share(xyxy, (x0, y0, x0 + 8, y0 + 8)) >= 0.5]] = 1
        np.testing.assert_array_equal(target.numpy(), expected)
        labelled += bool(expected.any())
    if litter_share == 1.0:  # centred on a 5-px box, an 8-px crop (jitter 2 px) always holds most of it
        assert labelled == len(data.image_ids)


def test_box_centred_crops_draw_the_class_uniformly(tiny_prepared):
    data = load_crop_set(tiny_prepared, ("train",), 8, crops(litter_share=1.0, jitter=0.0, count=300))
    per_class = data.targets.sum(dim=0).numpy()
    # a class is centred on in ~1/3 of the crops (others may be inside too): never far below that
    assert (per_class >= 0.25 * 300).all(), per_class


def test_the_same_settings_give_the_same_crops_and_another_seed_others(tiny_prepared):
    a = load_crop_set(tiny_prepared, ("train", "tagged"), 8, crops())
    b = load_crop_set(tiny_prepared, ("train", "tagged"), 8, crops())
    c = load_crop_set(tiny_prepared, ("train", "tagged"), 8, crops(seed=1))
    assert a.image_ids == b.image_ids and (a.images == b.images).all()
    assert a.image_ids != c.image_ids


def test_crops_are_downsampled_to_the_models_size(tiny_prepared):
    data = load_crop_set(tiny_prepared, ("val",), 4, crops())
    assert data.images.shape == (40, 3, 4, 4)
    assert all(origin(i)[0].startswith("val") for i in data.image_ids)


def test_crop_errors_name_the_setting(tiny_prepared):
    with pytest.raises(StageError, match=r"crops.px 32 exceeds image train_000 \(16x16 px\)"):
        load_crop_set(tiny_prepared, ("train",), 8, crops(px=32))
    with pytest.raises(StageError, match=r"crops side 8 must be a multiple of image_size 16 \(crops are only"):
        load_crop_set(tiny_prepared, ("train",), 16, crops())
    with pytest.raises(StageError, match="crops side 6 must be a multiple of image_size 4"):
        load_crop_set(tiny_prepared, ("train",), 4, crops(small_px=6))
    with pytest.raises(ValueError, match=r"small_px: must be null or in \[1, px = 8\), got 8"):
        crops(small_px=8)
    with pytest.raises(ValueError, match=r"litter_share: must be in \[0, 1\], got 1.5"):
        crops(litter_share=1.5)


def test_small_boxes_are_cut_at_the_small_side_and_road_at_both(tiny_prepared):
    # 5-px boxes fit half of 12: every box-centred crop is 12 px; road crops are 12 or 16 px (the image)
    frame = load_manifest(tiny_prepared, ("train",)).set_index("image_id")
    for litter_share, sides in ((1.0, {12}), (0.0, {12, 16})):
        data = load_crop_set(tiny_prepared, ("train",), 4, crops(px=16, small_px=12, litter_share=litter_share,
                                                                 jitter=0.0, count=60))
        seen = set()
        for crop_id, image in zip(data.image_ids, data.images):
            image_id, x0, y0 = origin(crop_id)
            rgb = read_rgb(frame.loc[image_id, "abspath"])
            side = next(s for s in (12, 16) if x0 + s <= 16 and y0 + s <= 16 and np.array_equal(
                image.permute(1, 2, 0).numpy(), resample_rgb(rgb[y0:y0 + s, x0:x0 + s], 4)))
            seen.add(side)
        assert seen == sides
    assert window_side(5, 6, crops(px=16, small_px=12)) == 12 and window_side(7, 6, crops(px=16, small_px=12)) == 16
    assert window_side(1, 6, crops(px=16)) == 16


def test_a_section_without_crops_trains_on_whole_images(tiny_prepared):
    cfg = settings(ClassifierTrainConfig, "classifier", image_size=8)
    data = load_training_set(tiny_prepared, ("train", "tagged"), cfg)
    assert data.images.shape == (16, 3, 8, 8) and data.image_ids[0] == "train_000"
