"""COCO detection reader (also TACO-style and Roboflow COCO exports).

Annotation files: `path` itself if it is a .json; else every *.json in the folder, or else in
its `annotations/` folder, or else in its `train|valid|val|test/` folders (Roboflow:
`<split>/_annotations.coco.json`). Each file holds `images` (id, file_name, optional width and
height -> `declared_size`), `annotations` (id, image_id, category_id, bbox [x, y, w, h] in
pixels, optional segmentation -> `SourceBox.mask`, iscrowd) and `categories` (id, name, optional
supercategory -> `SourceBox.supercategory`, e.g. TACO).

- `file_name` is looked up relative to the json's folder, then relative to an `images/` folder
  beside the json; the first that exists wins.
- Class names: each file's categories sorted by id, files in sorted order, each name once.
- `segmentation`: polygons (a list of flat [x1, y1, x2, y2, ...] lists) or an uncompressed RLE
  ({"counts": [ints], "size": [h, w]}) become the box's mask; absent or `[]` means no mask. A
  compressed RLE (`counts` a string) is not decoded: the box is kept without a mask and reported
  as fixed.
- A missing or empty `bbox` is derived from the segmentation (the extent of the polygon points,
  or of the decoded RLE's pixels); a compressed RLE without bbox is a bad record. When both
  exist, `bbox` is used.
- `iscrowd: 1` annotations are not object instances: left out, each reported as fixed
  ("iscrowd annotation ignored"); the image is kept.
- Images with no annotations are kept as clean images (boxes = ()).
- Split: from the annotation file's path under the root (`instances_train2017.json`,
  `train.json`, `*_val*.json`, `valid/_annotations.coco.json`, `test`), see `split_name`.
- Fatal (whole file): not UTF-8, empty, malformed JSON, top level not an object, `images` /
  `annotations` / `categories` missing or not lists, a category without integer id and name,
  a duplicate category id.
- Bad records: an image entry without id or file_name, bad width/height, its file missing or
  outside the root, a duplicate image id (both images are dropped: their annotations cannot
  be told apart), an annotation with unknown image_id or category_id, a bbox that is not 4
  finite numbers or has a negative width or height, a malformed segmentation (a polygon under
  3 points or with a non-number, RLE counts that are not non-negative integers summing to
  h * w, any other shape). Annotations of an image already reported
  bad are dropped without a second report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from detection.formats import SPLIT_DIR_NAMES, add_unique, dataset_root, read_annotation_text, resolve_under, split_name
from detection.masks import rle_mask
from detection.records import BadRecord, Problems, SourceBox, SourceImage, SourceMask, fatal, image_key

Categories = dict[int, tuple[str, str | None]]  # category id -> (name, supercategory)


def read_coco(path: Path, problems: Problems) -> tuple[list[SourceImage], list[str]]:
    root = dataset_root(path)
    names: list[str] = []
    images: list[SourceImage] = []
    seen: dict[str, SourceImage] = {}
    for json_file in [path] if path.is_file() else annotation_files(path):
        data = load_coco_json(json_file)
        categories = read_categories(json_file, data["categories"])
        names = list(dict.fromkeys([*names, *(name for name, _ in categories.values())]))
        split = split_name(json_file.relative_to(root).as_posix())
        for image in read_images(root, json_file, data, categories, split, problems):
            add_unique(images, seen, image, problems)
    return images, names


def annotation_files(folder: Path) -> list[Path]:
    for places in ([folder], [folder / "annotations"], [folder / s for s in SPLIT_DIR_NAMES]):
        files = sorted(f for place in places for f in place.glob("*.json") if f.is_file())
        if files:
            return files
    raise fatal(folder, "folder", "no COCO *.json found (looked in it, annotations/ and train|valid|val|test/)")


def load_coco_json(json_file: Path) -> dict[str, Any]:
    text = read_annotation_text(json_file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise fatal(json_file, "JSON", f"{err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(data, dict):
        raise fatal(json_file, "top level", "expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise fatal(json_file, key, "missing or not a list (not a COCO detection file?)")
    return data


def read_categories(json_file: Path, entries: list[Any]) -> Categories:
    categories: Categories = {}
    for index, entry in enumerate(entries):
        cat_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(cat_id, int) or isinstance(cat_id, bool):
            raise fatal(json_file, f"categories[{index}]", "expected an object with an integer id")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fatal(json_file, f"category id {cat_id}", "missing or empty name")
        if cat_id in categories:
            raise fatal(json_file, f"category id {cat_id}", "duplicate category id")
        supercategory = entry.get("supercategory")
        categories[cat_id] = (name, supercategory if isinstance(supercategory, str) and supercategory else None)
    return dict(sorted(categories.items()))


def read_images(root: Path, json_file: Path, data: dict[str, Any], categories: Categories,
                split: str | None, problems: Problems) -> list[SourceImage]:
    """The images of one COCO file with their boxes; bad annotations make their image bad."""
    entries, rejected = image_entries(root, json_file, data["images"], problems)
    boxes: dict[Any, list[SourceBox]] = {image_id: [] for image_id in entries}
    for index, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        record = f"annotation id {ann_id}" if _is_id(ann_id) else f"annotations[{index}]"
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if _is_id(image_id) and image_id in rejected:
            continue
        try:
            if not _is_id(image_id) or image_id not in entries:
                raise BadRecord(f"unknown image_id {image_id!r}")
            box = annotation_box(ann, categories, record)
        except BadRecord as err:
            problems.bad(json_file, record, str(err))
            if _is_id(image_id) and image_id in entries:
                rejected.add(image_id)
            continue
        if box is None:
            problems.fix(json_file, record, "iscrowd annotation ignored")
            continue
        if is_compressed_rle(ann.get("segmentation")):
            problems.fix(json_file, record, "compressed RLE segmentation not decoded: the box is used without a mask")
        boxes[image_id].append(box)
    return [SourceImage(key=image_key(root, file), path=file, annotation_file=json_file,
                        record=f"image id {image_id}", boxes=tuple(boxes[image_id]), split=split,
                        declared_size=size)
            for image_id, (file, size) in entries.items() if image_id not in rejected]


def image_entries(root: Path, json_file: Path, entries: list[Any], problems: Problems
                  ) -> tuple[dict[Any, tuple[Path, tuple[int, int] | None]], set[Any]]:
    """image id -> (image file, declared size) of the usable entries, and the ids reported bad."""
    bases = [json_file.parent, json_file.parent / "images"]
    kept: dict[Any, tuple[Path, tuple[int, int] | None]] = {}
    first_index: dict[Any, int] = {}
    rejected: set[Any] = set()
    for index, entry in enumerate(entries):
        image_id = entry.get("id") if isinstance(entry, dict) else None
        record = f"image id {image_id}" if _is_id(image_id) else f"images[{index}]"
        try:
            if not _is_id(image_id):
                raise BadRecord("missing or invalid image id")
            if image_id in first_index:
                raise BadRecord(f"duplicate image id (also images[{first_index[image_id]}])")
            first_index[image_id] = index
            kept[image_id] = (image_file(root, bases, entry.get("file_name")), declared_size(entry))
        except BadRecord as err:
            if _is_id(image_id):
                rejected.add(image_id)
                kept.pop(image_id, None)
            problems.bad(json_file, record, str(err))
    return kept, rejected


def image_file(root: Path, bases: list[Path], name: Any) -> Path:
    if not isinstance(name, str) or not name:
        raise BadRecord(f"missing or invalid file_name {name!r}")
    for base in bases:
        candidate = resolve_under(root, base, name)
        if candidate.is_file():
            return candidate
    raise BadRecord(f"image file {name!r} not found (looked in {' and '.join(str(b) for b in bases)})")


def declared_size(entry: dict[str, Any]) -> tuple[int, int] | None:
    width, height = entry.get("width"), entry.get("height")
    if width is None or height is None:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and float(v).is_integer()
               for v in (width, height)):
        raise BadRecord(f"width and height must be positive integers, got {width!r} x {height!r}")
    return int(width), int(height)


def annotation_box(ann: dict[str, Any], categories: Categories, record: str) -> SourceBox | None:
    """The box of one annotation in pixel corners; None for an iscrowd annotation."""
    if ann.get("iscrowd") in (1, True):
        return None
    category_id = ann.get("category_id")
    if not isinstance(category_id, int) or isinstance(category_id, bool) or category_id not in categories:
        raise BadRecord(f"unknown category_id {category_id!r}")
    mask = segmentation_mask(ann.get("segmentation"))
    bbox = ann.get("bbox")
    if bbox is None or (isinstance(bbox, list) and not bbox):
        x, y, w, h = mask_bbox(ann.get("segmentation"), mask)
    else:
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise BadRecord(f"bbox must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (_number(v, "bbox") for v in bbox)
        if w < 0 or h < 0:
            raise BadRecord(f"bbox has a negative width or height: {bbox!r}")
    name, supercategory = categories[category_id]
    return SourceBox(name, x, y, x + w, y + h, record, supercategory, mask)


def is_compressed_rle(segmentation: Any) -> bool:
    return isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str)


def segmentation_mask(segmentation: Any) -> SourceMask | None:
    """The mask of a COCO `segmentation` (polygons or uncompressed RLE); None when absent or compressed."""
    if segmentation is None or segmentation == [] or is_compressed_rle(segmentation):
        return None
    if isinstance(segmentation, list):
        polygons = []
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                raise BadRecord("segmentation polygon must be a list of at least 3 x, y points")
            polygons.append(tuple(_number(v, "segmentation") for v in polygon))
        return SourceMask(tuple(polygons), (), None)
    if not isinstance(segmentation, dict):
        raise BadRecord(f"segmentation must be a list of polygons or an RLE {{counts, size}}, got {segmentation!r:.60}")
    counts, size = segmentation.get("counts"), segmentation.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_count(v) and v > 0 for v in size)):
        raise BadRecord(f"segmentation RLE size must be [height, width], got {size!r:.60}")
    if not (isinstance(counts, list) and all(_is_count(v) for v in counts)):
        raise BadRecord("segmentation RLE counts must be a list of non-negative integers")
    if sum(counts) != size[0] * size[1]:
        raise BadRecord(f"segmentation RLE counts sum to {sum(counts)}, not {size[0]} x {size[1]} = "
                        f"{size[0] * size[1]} pixels")
    return SourceMask((), tuple(counts), (size[0], size[1]))


def mask_bbox(segmentation: Any, mask: SourceMask | None) -> tuple[float, float, float, float]:
    """[x, y, w, h] of a segmentation: the extent of its polygon points, or of its RLE pixels."""
    if mask is None:
        if is_compressed_rle(segmentation):
            raise BadRecord("no bbox, and the segmentation is a compressed RLE (not decoded here)")
        raise BadRecord("no bbox and no segmentation")
    if mask.rle_size is None:
        xs = [v for polygon in mask.polygons for v in polygon[0::2]]
        ys = [v for polygon in mask.polygons for v in polygon[1::2]]
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    rows, cols = rle_mask(mask.rle_counts, mask.rle_size).nonzero()
    if not len(rows):
        raise BadRecord("no bbox, and the segmentation RLE is empty")
    return float(cols.min()), float(rows.min()), float(cols.max() + 1 - cols.min()), float(rows.max() + 1 - rows.min())


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRecord(f"{what} values must be finite numbers, got {value!r}")
    return float(value)


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and bool(value))
