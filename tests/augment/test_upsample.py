"""augment/upsample.py: the generated images to the detector's resolution, upsampler vs plain resampling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from augment.settings import GenMetricsSettings, UpsampleSettings
from augment.upsample import compare_methods, edge_energy, image_seed, run
from core.errors import StageError
from scenes.prepared import load_manifest, read_rgb, resample_rgb
from scenes.synthetic import read_generated
from tests.support import TINY_CLASSES, TINY_SIZE, make_synthetic, settings, tiny_noisy_classifier, tiny_upsampler

SETTINGS = settings(UpsampleSettings, "upsample", method="diffusion", steps=2, seed=0, batch_size=2)
METRICS = settings(GenMetricsSettings, "gen_metrics", k=1, kid_subsets=5, batch_size=4)


def upsample_tiny(tmp_path, upsample_settings=SETTINGS, upsampler=None, n=5):
    """The 4-px synthetic images of make_synthetic to the 16-px tiny prepared images."""
    generated = read_generated(make_synthetic(tmp_path, n=n, size=4), TINY_CLASSES)
    real = list(load_manifest(tmp_path / "data" / "prepared", ("test",))["abspath"])
    judge = tiny_noisy_classifier(TINY_CLASSES, TINY_SIZE, seed=2)
    report, ms = run(generated, real, upsample_settings, METRICS, upsampler or tiny_upsampler(), judge, TINY_SIZE,
                     tmp_path / "up")
    return generated, report, ms


def test_seeds_depend_on_the_image_id_and_the_seed_only():
    assert image_seed(0, "syn001") == image_seed(0, "syn001")
    assert len({image_seed(0, "syn001"), image_seed(0, "syn002"), image_seed(1, "syn001")}) == 3


def test_edge_energy_is_the_mean_absolute_neighbour_difference():
    stripes = torch.zeros(1, 3, 4, 4)
    stripes[..., 1::2] = 1.0  # columns alternate: every horizontal neighbour differs by 1, no vertical one
    assert edge_energy(stripes) == pytest.approx(0.5)
    assert edge_energy(torch.full((2, 3, 5, 5), 0.3)) == 0.0


def test_the_used_method_is_written_as_a_synthetic_folder_and_both_are_compared(tiny_prepared, tmp_path):
    generated, report, ms = upsample_tiny(tmp_path)
    written = read_generated(tmp_path / "up", TINY_CLASSES)
    assert list(written["image_id"]) == list(generated["image_id"])
    assert list(written["target"]) == list(generated["target"])
    assert all(read_rgb(path).shape == (16, 16, 3) for path in written["abspath"])
    assert set(report["methods"]) == {"diffusion", "bicubic"} == set(ms)
    for figures in report["methods"].values():
        assert figures["n_generated"] == 5 and figures["n_real"] == 6
        assert figures["fd"] >= 0 and figures["edge_energy_vs_real"] > 0 and 0 <= figures["precision"] <= 1
    assert (report["method"], report["image_size"], report["n_images"]) == ("diffusion", 16, 5)
    assert "ms" not in str(report["methods"])  # timings would make the same inputs give other bytes


def test_bicubic_alone_is_exactly_the_plain_resampling_of_the_other_stages(tiny_prepared, tmp_path):
    _, report, _ = upsample_tiny(tmp_path, dataclasses.replace(SETTINGS, method="bicubic"))
    low = sorted((tmp_path / "data/synthetic/images").glob("*.png"))
    written = sorted((tmp_path / "up" / "images").glob("*.png"))
    assert [p.name for p in low] == [p.name for p in written]
    assert all(np.array_equal(resample_rgb(read_rgb(a), 16), read_rgb(b)) for a, b in zip(low, written))
    assert set(report["methods"]) == {"bicubic"}


def test_the_comparison_sees_the_images_at_the_detector_resolution():
    seen = []

    class Recorder(nn.Module):
        num_features = 3

        def forward(self, images):
            seen.append(tuple(images.shape[-2:]))
            return images.mean(dim=(2, 3))

    real = [np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(4)]
    compared = compare_methods({"bicubic": real[:3], "diffusion": real[1:]}, real, Recorder(), METRICS)
    assert seen and set(seen) == {(16, 16)}
    assert compared["bicubic"]["edge_energy_vs_real"] > 0 and compared["diffusion"]["n_generated"] == 3


def test_a_generative_resolution_the_upsampler_was_not_trained_for_is_one_line(tiny_prepared, tmp_path):
    generated = read_generated(make_synthetic(tmp_path, n=2, size=8), TINY_CLASSES)
    with pytest.raises(StageError, match=r"syn000.png: 8 px x the upsampler's factor 4 is not the prepared images' "
                                         r"16 px; train the upsampler for this generative resolution$"):
        run(generated, [], SETTINGS, METRICS, tiny_upsampler(), tiny_noisy_classifier(TINY_CLASSES, TINY_SIZE),
            TINY_SIZE, tmp_path / "up")
    assert not (tmp_path / "up").exists()


def test_no_images_or_no_upsampler_is_one_line(tiny_prepared, tmp_path):
    generated = read_generated(make_synthetic(tmp_path, n=1, size=4), TINY_CLASSES)
    judge = tiny_noisy_classifier(TINY_CLASSES, TINY_SIZE)
    with pytest.raises(StageError, match="^upsample: generate made no guided images$"):
        run(generated.iloc[:0], [], SETTINGS, METRICS, tiny_upsampler(), judge, TINY_SIZE, tmp_path / "up")
    with pytest.raises(StageError, match="^upsample: method diffusion needs the trained upsampler$"):
        run(generated, [], SETTINGS, METRICS, None, judge, TINY_SIZE, tmp_path / "up")
