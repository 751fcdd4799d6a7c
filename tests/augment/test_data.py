"""augment.data: the prepared images in memory, the resumable batch order, the classifier's augmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from augment.data import (
    AugmentedImages,
    EpochBatchSampler,
    ImageSet,
    classifier_augmentation,
    load_image_set,
    to_model_range,
)
from core.errors import StageError
from tests.support import TINY_CLASSES, TINY_SIZE, TINY_SPLITS


def test_image_set_holds_the_splits_as_uint8_with_multi_hot_tags(tiny_prepared):
    data = load_image_set(tiny_prepared, ("train", "tagged"), TINY_SIZE)
    n = TINY_SPLITS["train"] + TINY_SPLITS["tagged"]
    assert data.images.shape == (n, 3, TINY_SIZE, TINY_SIZE) and data.images.dtype == torch.uint8
    assert data.class_names == tuple(TINY_CLASSES) and data.image_size == TINY_SIZE
    manifest = pd.read_csv(tiny_prepared / "manifest.csv", keep_default_na=False)
    first = manifest[manifest["image_id"] == data.image_ids[3]].iloc[0]
    expected = [float(name in first["tags"].split(";")) for name in TINY_CLASSES]
    assert data.targets[3].tolist() == expected
    pixels = np.array(Image.open(tiny_prepared / first["path"]))
    assert torch.equal(data.images[3], torch.from_numpy(pixels).permute(2, 0, 1))


def test_mixed_sizes_and_unknown_tags_are_one_line_errors(tiny_prepared):
    manifest = pd.read_csv(tiny_prepared / "manifest.csv", keep_default_na=False)
    Image.new("RGB", (8, 8)).save(tiny_prepared / manifest.loc[2, "path"])
    with pytest.raises(StageError, match=r"image train_002: size \(8, 8\) differs from \(16, 16\)"):
        load_image_set(tiny_prepared, ("train",), TINY_SIZE)
    manifest.loc[9, "tags"] = "glass"
    manifest.to_csv(tiny_prepared / "manifest.csv", index=False)
    with pytest.raises(StageError, match=r"manifest.csv: tag\(s\) glass not in data.yaml names"):
        load_image_set(tiny_prepared, ("tagged",), TINY_SIZE)
    with pytest.raises(StageError, match=r"no images in split\(s\) nothing"):
        load_image_set(tiny_prepared, ("nothing",), TINY_SIZE)


def test_the_generative_models_read_the_prepared_images_area_downsampled_to_their_size(tiny_prepared):
    full = load_image_set(tiny_prepared, ("train",), TINY_SIZE)
    half = load_image_set(tiny_prepared, ("train",), TINY_SIZE // 2)
    assert half.images.shape == (len(full.images), 3, TINY_SIZE // 2, TINY_SIZE // 2) and half.image_size == 8
    # a factor-2 box filter is the mean of each 2x2 block (PIL works in 8-bit fixed point: within 1 level)
    blocks = full.images.double().reshape(-1, 3, 8, 2, 8, 2).mean(dim=(3, 5))
    assert (half.images.double() - blocks).abs().max() <= 1.0
    assert torch.equal(half.targets, full.targets)
    with pytest.raises(StageError, match=rf"image_size {2 * TINY_SIZE} of a generative model exceeds the prepared "
                                         rf"images' {TINY_SIZE} px"):
        load_image_set(tiny_prepared, ("train",), 2 * TINY_SIZE)


def test_model_range_maps_0_and_255_to_minus_1_and_1():
    assert to_model_range(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]


def test_batch_order_is_a_fresh_permutation_per_epoch_and_resumes_exactly():
    full = list(EpochBatchSampler(10, 3, seed=4, start=0, n_batches=9))  # 3 batches per epoch, one image dropped
    assert all(len(b) == 3 for b in full)
    for epoch in range(3):
        items = [i for b in full[3 * epoch: 3 * epoch + 3] for i in b]
        assert len(set(items)) == 9 and set(items) <= set(range(10))
    assert full[:3] != full[3:6]
    assert list(EpochBatchSampler(10, 3, seed=4, start=5, n_batches=4)) == full[5:]
    assert list(EpochBatchSampler(10, 3, seed=5, start=0, n_batches=3)) != full[:3]
    with pytest.raises(StageError, match="4 images is fewer than one batch"):
        EpochBatchSampler(4, 8, seed=0, start=0, n_batches=1)


def test_augmentation_at_strength_0_only_flips_and_is_seeded():
    image = torch.arange(3 * 4 * 4, dtype=torch.uint8).reshape(1, 3, 4, 4)
    data = ImageSet(image, torch.tensor([[1.0, 0.0]]), ("a", "b"), ("x",))
    flips = AugmentedImages(data, classifier_augmentation(0.0, seed=1))
    original = to_model_range(image[0])
    for _ in range(6):
        x, target = flips[0]
        assert torch.equal(x, original) or torch.equal(x, original.flip(2))
        assert target.tolist() == [1.0, 0.0]
    runs = [[AugmentedImages(data, classifier_augmentation(1.0, seed=7))[0][0] for _ in range(4)] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert torch.equal(AugmentedImages(data, None)[0][0], original)
