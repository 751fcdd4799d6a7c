"""The format-neutral view of a source dataset that every reader (COCO, YOLO, VOC) produces.

Readers only parse: they resolve file names safely, check the structure of the annotation files
and report each bad record through `Problems`. Class mapping, box clipping against the real image
size, resizing and splitting happen once, in `detection.prepare`, for every format alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import StageError

ON_ERROR = ("fail", "skip")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SOURCE_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SourceMask:
    """An instance's shape in source pixels, as COCO gives it (`detection.masks` rasterises it):
    polygons of flat [x1, y1, x2, y2, ...] pixel-edge coordinates, or an uncompressed RLE."""

    polygons: tuple[tuple[float, ...], ...]   # () for an RLE
    rle_counts: tuple[int, ...]               # () for polygons: run lengths, background first, column-major
    rle_size: tuple[int, int] | None          # (height, width) of the RLE's image; None for polygons


@dataclass(frozen=True)
class SourceBox:
    """One box in source pixels, corners (x0, y0) top-left and (x1, y1) bottom-right."""

    label: str                      # class name as the source spells it
    x0: float
    y0: float
    x1: float
    y1: float
    record: str                     # where it came from, e.g. "annotation id 17" or "line 3"
    supercategory: str | None = None
    mask: SourceMask | None = None  # the instance's shape where the source has one (COCO / TACO)


@dataclass(frozen=True)
class SourceImage:
    key: str                        # unique within the dataset: path relative to the root, no suffix
    path: Path                      # the image file, checked to lie inside the dataset root
    annotation_file: Path           # the file that described it (the image itself if none)
    record: str                     # e.g. "image id 3" or the label file name
    boxes: tuple[SourceBox, ...]
    split: str | None = None        # train | val | test when the source already splits
    declared_size: tuple[int, int] | None = None  # (width, height) if the annotations state it


@dataclass
class Problems:
    """Collects bad records: `fail` raises on the first, `skip` keeps them for the import report."""

    on_error: str                         # fail | skip (ON_ERROR)
    on_missing_split: str                 # a declared split whose folder is absent: fail | skip
    skipped: list[dict] = field(default_factory=list)
    fixed: list[dict] = field(default_factory=list)
    missing_splits: list[dict] = field(default_factory=list)

    def bad(self, file: Path | str, record: str, reason: str) -> None:
        """A record that cannot be used: stop (fail) or note it as skipped (skip)."""
        if self.on_error == "fail":
            raise StageError(f"{file}: {record}: {reason}")
        self.skipped.append({"file": str(file), "record": record, "reason": reason})

    def fix(self, file: Path | str, record: str, reason: str) -> None:
        """A record that was repaired (e.g. a box clipped by a pixel); always reported."""
        self.fixed.append({"file": str(file), "record": record, "reason": reason})

    def missing_split(self, file: Path | str, split: str, reason: str) -> None:
        """A split the dataset declares but does not ship (an export downloaded in part): stop
        (`on_missing_split: fail`) or note it and go on without it (`skip`)."""
        if self.on_missing_split == "fail":
            raise StageError(f"{file}: {split}: {reason}")
        self.missing_splits.append({"file": str(file), "split": split, "reason": reason})


class BadRecord(Exception):
    """Raised by parsing helpers with the reason only; the reader adds file and record via `Problems`."""


class MissingSplit(BadRecord):
    """A declared split's folder or list does not exist."""


def fatal(file: Path | str, record: str, reason: str) -> StageError:
    """An error no `skip` can work around (e.g. the annotation file itself is unreadable)."""
    return StageError(f"{file}: {record}: {reason}")


def resolve_inside(root: Path, name: str) -> Path:
    """Resolve `name` relative to `root`; absolute names, `..` and symlinks leading out are BadRecord."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise BadRecord(f"empty or invalid file name {name!r}")
    if os.path.isabs(name) or name.startswith(("\\", "/")) or (len(name) > 1 and name[1] == ":"):
        raise BadRecord(f"file name {name!r} is absolute; names must be relative to the dataset root")
    if ".." in Path(name.replace("\\", "/")).parts:
        raise BadRecord(f"file name {name!r} escapes the dataset root")
    root_real = root.resolve()
    candidate = root / name
    real = candidate.resolve()
    if real != root_real and root_real not in real.parents:
        raise BadRecord(f"file name {name!r} resolves outside the dataset root (symlink?)")
    return candidate


def image_key(root: Path, path: Path) -> str:
    """The dataset-unique key of an image: its path under the root, without suffix, '/' kept."""
    return path.relative_to(root).with_suffix("").as_posix()
