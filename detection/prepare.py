"""The `import` stage's work: source dataset (any format) -> the prepared-dataset contract.

Order of work, the same for every format: read records (`detection.formats`), map source class
names to `dataset.classes`, open every image (unreadable or truncated files are bad records),
check boxes against the real image size (clip up to `clip_tolerance_px`, else bad), resize to a
square `image_size` (letterbox keeps the aspect ratio and pads with grey 114 as ultralytics
does; stretch scales each axis), split (`detection.splits`) and write images, YOLO labels,
`manifest.csv`, `data.yaml`. A bad box makes its whole image bad: dropping only the box would
leave an unlabelled object that the detector learns as background.

The unlabelled pool (`dataset.unlabelled`, `detection.pool`) is read beside the boxed dataset
and goes through the same checks and resize: images with known tags (or known to be clean) join
`tagged`, the others `unlabelled`. Neither takes part in the split dealing; `split.mode` decides
whether the boxed images also give a `tagged` share (`detection.splits`). The preflight of object
sizes (`detection.preflight`) measures every box of the boxed dataset at `image_size`.

Instance masks (COCO / TACO segmentation, `SourceBox.mask`) are rasterised in source px
(`detection.masks`), resized with the image's own geometry (`square_geometry`) by area average,
and an output pixel goes to the instance covering at least `MASK_COVERAGE` of it (the one
covering it most); the instance map is written for boxed splits (`scenes.prepared`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from core.errors import StageError
from core.io import write_json
from core.params import check_at_least, check_choice, to_jsonable
from detection.formats import FORMATS, dataset_root, detect_format, read_dataset
from detection.masks import instance_map, source_mask_pixels
from detection.pool import POOL_KEY_PREFIX, TAGS_FILE, PoolRecord, read_pool
from detection.preflight import preflight
from detection.records import ON_ERROR, BadRecord, Problems, SourceBox, SourceImage
from detection.splits import SplitParams, assign_splits
from scenes.prepared import BOXED_SPLITS, MANIFEST_COLUMNS, SPLITS

PAD_GREY = (114, 114, 114)
MASK_COVERAGE = 0.5      # an output pixel belongs to an instance whose mask covers at least this share of it


@dataclass(frozen=True)
class DatasetParams:
    """params.yaml `dataset`: where the source dataset is and how to read it."""

    path: str                  # a COCO json, a YOLO data.yaml, a VOC folder, or a folder holding one
    format: str                # auto | coco | yolo | voc
    classes: tuple[str, ...]   # the target classes, in order
    class_map: dict            # source category / supercategory name -> one of `classes`
    unmapped: str              # drop | fail | <a class>
    image_size: int            # square side of the prepared images in px
    resize: str                # letterbox | stretch
    clip_tolerance_px: float   # boxes at most this far outside the image are clipped
    min_box_px: float          # boxes thinner than this (source px) are degenerate
    on_error: str              # fail | skip
    on_missing_split: str      # a split the source declares but does not ship: skip (reported) | fail
    unlabelled: str            # folder of images without boxes, optional tags.csv (detection.pool)
    small_box_px: float        # preflight: a class whose median box (shorter side, px at image_size) is under this

    def __post_init__(self) -> None:
        check_choice(self, "format", ("auto", *FORMATS))
        check_choice(self, "resize", ("letterbox", "stretch"))
        check_choice(self, "on_error", ON_ERROR)
        check_choice(self, "on_missing_split", ("skip", "fail"))
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be a non-empty list of distinct names, got {list(self.classes)}")
        bad_targets = sorted(set(self.class_map.values()) - set(self.classes))
        if bad_targets:
            raise ValueError(f"class_map maps to {bad_targets}, which are not in classes {list(self.classes)}")
        if self.unmapped not in ("drop", "fail") and self.unmapped not in self.classes:
            raise ValueError(f"unmapped must be drop, fail or one of classes, got {self.unmapped!r}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        check_at_least(self, 0, "small_box_px")


@dataclass(frozen=True)
class PreparedImage:
    source: SourceImage
    image: Image.Image                       # RGB, image_size x image_size
    boxes: tuple[tuple[int, float, float, float, float], ...]  # (class index, cx, cy, w, h) normalised
    source_sides: tuple[float, ...]          # each box's shorter side in source px (the preflight's)
    source_masks: int                        # boxes whose source has a mask
    instances: np.ndarray | None             # instance map [size, size] (scenes.prepared); None: no mask


def map_name(params: DatasetParams, label: str, supercategory: str | None = None) -> str | None:
    """Target class of a source class name (a box's label, then its supercategory, or a pool image's tag), via
    classes or class_map; None: dropped (`unmapped: drop`)."""
    for name in (label, supercategory):
        if name is None:
            continue
        if name in params.class_map:
            return params.class_map[name]
        if name in params.classes:
            return name
    if params.unmapped == "drop":
        return None
    if params.unmapped == "fail":
        raise BadRecord(f"unknown class {label!r} (not in dataset.classes or dataset.class_map)")
    return params.unmapped


def open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise BadRecord(f"image file {path} is missing")
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully: truncated files fail here, not later
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise BadRecord(f"unreadable image {path.name}: {err}") from None


def check_box(box: SourceBox, width: int, height: int, params: DatasetParams, problems: Problems,
              file: Path) -> tuple[float, float, float, float]:
    """The box clipped to the image; raises BadRecord if degenerate or too far outside."""
    tol = params.clip_tolerance_px
    x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        raise BadRecord(f"{box.record}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
                        f"{width}x{height} image by more than {tol:g} px")
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped[2] - clipped[0] < params.min_box_px or clipped[3] - clipped[1] < params.min_box_px:
        raise BadRecord(f"{box.record}: degenerate box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) "
                        f"in the {width}x{height} image")
    if clipped != (x0, y0, x1, y1):
        problems.fix(file, box.record, f"box clipped to the {width}x{height} image")
    return clipped


def square_geometry(width: int, height: int, size: int, mode: str) -> tuple[int, int, int, int]:
    """(new_w, new_h, ox, oy): a width x height image becomes new_w x new_h at (ox, oy) of the square."""
    if mode == "stretch":
        return size, size, 0, 0
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def resize_square(image: Image.Image, size: int, mode: str) -> tuple[Image.Image, float, float, float, float]:
    """Resized image and the map of source px to output px: x' = x * sx + ox, y' = y * sy + oy."""
    width, height = image.size
    new_w, new_h, ox, oy = square_geometry(width, height, size, mode)
    resized = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if mode == "stretch":
        return resized, size / width, size / height, 0.0, 0.0
    canvas = Image.new("RGB", (size, size), PAD_GREY)
    canvas.paste(resized, (ox, oy))
    return canvas, new_w / width, new_h / height, float(ox), float(oy)


def mask_coverage(box: SourceBox, width: int, height: int, size: int, mode: str) -> np.ndarray | None:
    """float32 [size, size]: the share of each output pixel the box's source mask covers; None without one."""
    if box.mask is None:
        return None
    try:
        pixels = source_mask_pixels(box.mask, width, height)
    except BadRecord as err:
        raise BadRecord(f"{box.record}: {err}") from None
    new_w, new_h, ox, oy = square_geometry(width, height, size, mode)
    scaled = Image.fromarray(pixels.astype(np.float32)).resize((new_w, new_h), Image.Resampling.BOX)
    coverage = np.zeros((size, size), np.float32)
    coverage[oy:oy + new_h, ox:ox + new_w] = np.asarray(scaled)
    return coverage


def prepare_image(source: SourceImage, params: DatasetParams, problems: Problems) -> PreparedImage | None:
    """Open, check, map and resize one image; None when it was skipped (skip mode)."""
    file = source.annotation_file
    try:
        image = open_image(source.path)
        width, height = image.size
        if source.declared_size and tuple(source.declared_size) != (width, height):
            raise BadRecord(f"declared size {source.declared_size[0]}x{source.declared_size[1]} "
                            f"differs from the image's {width}x{height}")
        resized, sx, sy, ox, oy = resize_square(image, params.image_size, params.resize)
        size = params.image_size
        boxes, coverages, sides = [], [], []
        for box in source.boxes:
            target = map_name(params, box.label, box.supercategory)
            x0, y0, x1, y1 = check_box(box, width, height, params, problems, file)
            if target is None:
                problems.fix(file, box.record, f"class {box.label!r} not mapped: box dropped")
                continue
            sides.append(min(x1 - x0, y1 - y0))
            x0, x1 = x0 * sx + ox, x1 * sx + ox
            y0, y1 = y0 * sy + oy, y1 * sy + oy
            boxes.append((params.classes.index(target), (x0 + x1) / 2 / size, (y0 + y1) / 2 / size,
                          (x1 - x0) / size, (y1 - y0) / size))
            coverages.append(mask_coverage(box, width, height, size, params.resize))
    except BadRecord as err:
        problems.bad(file, source.record, str(err))
        return None
    n_masks = sum(c is not None for c in coverages)
    instances = instance_map(coverages, (size, size), MASK_COVERAGE) if n_masks else None
    return PreparedImage(source, resized, tuple(boxes), tuple(sides), n_masks, instances)


def image_ids(sources: list[SourceImage], problems: Problems) -> dict[str, str]:
    """File-name-safe unique ids ('/' -> '__'); two keys that collide are a bad record."""
    ids: dict[str, str] = {}
    seen: dict[str, str] = {}
    for source in sources:
        image_id = source.key.replace("/", "__")
        if image_id in seen:
            problems.bad(source.annotation_file, source.record,
                         f"duplicate image id {image_id!r} (also {seen[image_id]})")
            continue
        seen[image_id] = source.key
        ids[source.key] = image_id
    return ids


@dataclass(frozen=True)
class Imported:
    """One prepared image on its way into the manifest."""

    item: PreparedImage
    split: str
    tags: tuple[str, ...]     # target class names present (() for a clean road, or an unknown image in `unlabelled`)
    source: str               # the source file, relative to its dataset or (prefixed unlabelled/) pool folder
    from_pool: bool           # from dataset.unlabelled, not from the boxed dataset


def prepare_dataset(dataset: DatasetParams, split: SplitParams, out: Path) -> dict:
    """Import the dataset at `dataset.path` and the pool at `dataset.unlabelled` into `out` (an empty
    dir); returns the import report."""
    path = Path(dataset.path)
    if not path.exists():
        raise StageError(f"{path}: dataset path not found (params.yaml dataset.path)")
    fmt = detect_format(path) if dataset.format == "auto" else dataset.format
    problems = Problems(dataset.on_error, dataset.on_missing_split)
    sources, source_names = read_dataset(path, fmt, problems)
    pool_folder = Path(dataset.unlabelled)
    pool = read_pool(pool_folder, problems)
    root = dataset_root(path)
    sources = sorted(sources, key=lambda s: s.key)
    ids = image_ids(sources + [p.source for p in pool], problems)
    prepared = [p for s in sources if s.key in ids and (p := prepare_image(s, dataset, problems))]
    if not prepared:
        raise StageError(f"{root}: no usable images found")
    if not any(p.boxes for p in prepared):
        raise StageError(f"{root}: none of the {len(prepared)} images has a box of dataset.classes; a detector "
                         "cannot learn from that (empty or missing label files? classes not mapped?)")
    names = list(dataset.classes)
    tags = [tuple(names[c] for c in sorted({b[0] for b in p.boxes})) for p in prepared]
    splits = assign_splits(tags, [p.source.split for p in prepared], split)
    entries = [Imported(p, s, t, p.source.path.relative_to(root).as_posix(), False)
               for p, s, t in zip(prepared, splits, tags)]
    entries += prepare_pool(pool, ids, dataset, problems, pool_folder)
    rows = [write_image(out, ids[e.item.source.key], e, dataset.image_size) for e in entries]
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    manifest.to_csv(out / "manifest.csv", index=False)
    data_yaml = {"path": ".", "names": dict(enumerate(names)), "nc": len(names),
                 **{s: f"images/{s}" for s in SPLITS}, "image_size": dataset.image_size}
    (out / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    report = {"source": str(root), "format": fmt, "source_classes": source_names, "classes": names,
              "split_mode": split.mode, **import_report(entries, names, problems),
              "unlabelled": pool_report(entries, pool_folder),
              "preflight": size_preflight(prepared, names, dataset)}
    write_json(out / "params.json", {"dataset": to_jsonable(dataset), "split": to_jsonable(split)})
    return report


def prepare_pool(pool: list[PoolRecord], ids: dict[str, str], params: DatasetParams, problems: Problems,
                 folder: Path) -> list[Imported]:
    """The pool's images, resized as the boxed ones: `tagged` when their tags are known, else `unlabelled`."""
    entries = []
    for record in pool:
        if record.source.key not in ids:
            continue
        relative = record.source.path.relative_to(folder).as_posix()
        try:
            tags = pool_tags(record, params, problems, folder / TAGS_FILE)
        except BadRecord as err:
            problems.bad(folder / TAGS_FILE, f"tags of {relative}", str(err))
            continue
        item = prepare_image(record.source, params, problems)
        if item is not None:
            entries.append(Imported(item, "unlabelled" if tags is None else "tagged", tags or (),
                                    POOL_KEY_PREFIX + relative, True))
    return entries


def pool_tags(record: PoolRecord, params: DatasetParams, problems: Problems, tags_file: Path) -> tuple[str, ...] | None:
    """A pool image's tags as target class names in class order (() for clean); None: unknown."""
    if record.tags is None:
        return None
    mapped = set()
    for name in record.tags:
        target = map_name(params, name)
        if target is None:
            problems.fix(tags_file, record.source.record,
                         f"tag {name!r} of {record.source.path.name} not mapped: dropped")
        else:
            mapped.add(target)
    return tuple(c for c in params.classes if c in mapped)


def write_image(out: Path, image_id: str, entry: Imported, size: int) -> dict:
    item, split = entry.item, entry.split
    image_path = out / "images" / split / f"{image_id}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    item.image.save(image_path)
    if split in BOXED_SPLITS:
        label_file = out / "labels" / split / f"{image_id}.txt"
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in item.boxes))
        if item.instances is not None and item.instances.any():
            mask_file = out / "masks" / split / f"{image_id}.png"
            mask_file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(item.instances).save(mask_file)
    return {"image_id": image_id, "split": split, "path": image_path.relative_to(out).as_posix(),
            "width": size, "height": size, "source": entry.source,
            "tags": ";".join(entry.tags), "n_boxes": len(item.boxes)}


def import_report(entries: list[Imported], names: list[str], problems: Problems) -> dict:
    """Images, boxes and masks per split and class, and every fixed or skipped record."""
    per_split = {}
    for split_name in SPLITS:
        members = [e for e in entries if e.split == split_name]
        boxes = Counter(names[b[0]] for e in members for b in e.item.boxes)
        images = Counter(tag for e in members for tag in e.tags)
        boxed = split_name in BOXED_SPLITS
        per_split[split_name] = {
            "images": len(members),
            "clean_images": sum(1 for e in members if e.split != "unlabelled" and not e.tags),
            "unknown_images": sum(1 for e in members if e.split == "unlabelled"),
            "images_per_class": {n: images[n] for n in names},
            "boxes_per_class": {n: boxes[n] for n in names},
            "labels_written": boxed,
            "boxes_with_mask": sum(masked_boxes(e.item) for e in members) if boxed else 0,
        }
    totals = Counter(names[b[0]] for e in entries for b in e.item.boxes)
    items = [e.item for e in entries]
    return {
        "images": len(entries), "boxes_per_class": {n: totals[n] for n in names},
        "splits": per_split,
        "masks": {"boxes_with_source_mask": sum(p.source_masks for p in items),
                  "boxes_with_mask": sum(s["boxes_with_mask"] for s in per_split.values()),
                  "lost_in_resize": sum(p.source_masks - masked_boxes(p) for p in items),
                  "note": "boxes_with_mask: boxes with pixels in masks/<split>/ (train, val, test); lost_in_resize: "
                          f"source masks that cover no output pixel by {MASK_COVERAGE:g} or more"},
        "fixed": problems.fixed, "skipped": problems.skipped,
        "missing_splits": problems.missing_splits,
    }


def pool_report(entries: list[Imported], folder: Path) -> dict:
    """What the unlabelled folder added: its images by what is known of them."""
    pool = [e for e in entries if e.from_pool]
    known = [e for e in pool if e.split == "tagged"]
    return {"folder": str(folder), "images": len(pool), "tagged": sum(bool(e.tags) for e in known),
            "clean": sum(not e.tags for e in known), "unknown": len(pool) - len(known),
            "note": "tagged and clean images (tags.csv) join the tagged split; unknown ones the unlabelled split, "
                    "which only the UNet, the upsampler and the self-training pool read"}


def size_preflight(prepared: list[PreparedImage], names: list[str], dataset: DatasetParams) -> dict:
    """detection.preflight over every box of the boxed dataset (withheld ones included)."""
    sides: dict[str, list[float]] = {n: [] for n in names}
    source_sides: dict[str, list[float]] = {n: [] for n in names}
    for item in prepared:
        for (c, _, _, w, h), source_side in zip(item.boxes, item.source_sides):
            sides[names[c]].append(min(w, h) * dataset.image_size)
            source_sides[names[c]].append(source_side)
    return preflight(sides, source_sides, dataset.image_size, dataset.small_box_px)


def masked_boxes(item: PreparedImage) -> int:
    """Boxes of an image with at least one pixel in its instance map."""
    return 0 if item.instances is None else len(np.setdiff1d(np.unique(item.instances), [0]))
