"""Image datasets for the generative side, read from the prepared manifest (`scenes.prepared`).

The generative models work at their own resolution (`image_size` of their params section, 32 px
on the demo), below the detector's: the prepared images are area-downsampled to it on load. The
images are small (~1000 of 32x32 on the demo), so a split is held in memory as one uint8 tensor
[N, 3, S, S]; models see float images in [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates on import
import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset, Sampler  # noqa: E402

from core.errors import StageError  # noqa: E402
from scenes.prepared import class_names, load_manifest, multi_hot, read_rgb, resample_rgb  # noqa: E402

GENERATIVE_SPLITS = ("train", "tagged")  # tags known: what the classifiers, judges and crops learn from
# every image a model may learn what roads look like from (the whole-image UNet, the upsampler): the
# unlabelled pool's images too, whose content is unknown
ROAD_SPLITS = (*GENERATIVE_SPLITS, "unlabelled")


@dataclass(frozen=True)
class ImageSet:
    """Images of some splits in memory: uint8 [N, 3, S, S] + multi-hot tags [N, n_classes]."""

    images: torch.Tensor
    targets: torch.Tensor
    class_names: tuple[str, ...]
    image_ids: tuple[str, ...]

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


def load_image_set(prepared: Path | str, splits: tuple[str, ...], size: int) -> ImageSet:
    """All images of `splits` as RGB uint8 at size x size (all must share one square size) with their tags."""
    names = class_names(prepared)
    frame = load_manifest(prepared, splits)
    if frame.empty:
        raise StageError(f"{Path(prepared) / 'manifest.csv'}: no images in split(s) {', '.join(splits)}")
    arrays, first = [], None
    for row in frame.itertuples():
        rgb = read_rgb(row.abspath)
        first = rgb.shape if first is None else first
        if rgb.shape != first or rgb.shape[0] != rgb.shape[1]:
            raise StageError(f"{row.abspath}: image {row.image_id}: size {rgb.shape[:2]} differs from "
                             f"{first[:2]}; prepared images must be square and all one size")
        if size > rgb.shape[0]:
            raise StageError(f"params.yaml: image_size {size} of a generative model exceeds the prepared images' "
                             f"{rgb.shape[0]} px; it must be at most the detector's resolution")
        arrays.append(resample_rgb(rgb, size))
    unknown = sorted({t for tags in frame["tags"] for t in tags} - set(names))
    if unknown:
        raise StageError(f"{Path(prepared) / 'manifest.csv'}: tag(s) {', '.join(unknown)} not in data.yaml names")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    targets = torch.from_numpy(np.stack([multi_hot(tags, names) for tags in frame["tags"]]))
    return ImageSet(images, targets, tuple(names), tuple(frame["image_id"]))


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.float() / 127.5 - 1.0


def to_rgb_arrays(images: torch.Tensor) -> np.ndarray:
    """float [n, 3, s, s] in [-1, 1] (clipped) -> uint8 RGB arrays [n, s, s, 3], `to_model_range`'s inverse."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class IndexDataset(Dataset):
    """Yields indices into an in-memory ImageSet, so batches stay cheap to shard and to collate."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


class EpochBatchSampler(Sampler):
    """Batches of a fresh seeded permutation every epoch, from batch number `start` onward.

    Batch k is a pure function of (seed, k), so a resumed run continues the exact data order of
    an uninterrupted one. Yields `n_batches` batches (drop_last within each epoch).
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, start: int, n_batches: int):
        if n_items < batch_size:
            raise StageError(f"training set: {n_items} images is fewer than one batch ({batch_size})")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start, self.n_batches, self.drop_last = start, n_batches, True
        self.per_epoch = n_items // batch_size

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        epoch, order = None, None
        for k in range(self.start, self.start + self.n_batches):
            if k // self.per_epoch != epoch:
                epoch = k // self.per_epoch
                order = torch.randperm(self.n_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            offset = (k % self.per_epoch) * self.batch_size
            yield order[offset: offset + self.batch_size].tolist()


def classifier_augmentation(strength: float, seed: int) -> A.Compose:
    """Mild albumentations augmentation; `strength` scales shift/scale/colour jitter (0 = flips only)."""
    return A.Compose(seed=seed, transforms=[
        A.HorizontalFlip(p=0.5),
        A.Affine(
            translate_percent=(-0.0625 * strength, 0.0625 * strength), scale=(1 - 0.1 * strength, 1 + 0.1 * strength),
            border_mode=4, p=0.5 if strength > 0 else 0.0,
        ),
        A.ColorJitter(
            brightness=0.15 * strength, contrast=0.15 * strength, saturation=0.15 * strength, hue=0.02 * strength,
            p=0.5 if strength > 0 else 0.0,
        ),
    ])


class AugmentedImages(Dataset):
    """(image float [3, S, S] in [-1, 1], multi-hot target [n_classes]) with albumentations applied."""

    def __init__(self, image_set: ImageSet, transform: A.Compose | None):
        self.image_set, self.transform = image_set, transform

    def __len__(self) -> int:
        return len(self.image_set.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.image_set.images[index]
        if self.transform is not None:
            array = self.transform(image=image.permute(1, 2, 0).numpy())["image"]
            image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        return to_model_range(image), self.image_set.targets[index]
