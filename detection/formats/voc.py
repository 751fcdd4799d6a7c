"""Pascal VOC reader (VOCdevkit layout, LabelImg and Roboflow VOC exports).

Layouts (the dataset root is the folder given):
- `Annotations/*.xml` + `JPEGImages/`, optional `ImageSets/Main/{train,val,test}.txt` (one
  image id = xml stem per line; `trainval.txt` and the per-class lists are not read). Images
  listed in none of them get split None.
- A folder of *.xml next to their images, searched recursively; a first folder named
  train / valid / val / test gives the split (Roboflow's VOC export).

Each xml: `<annotation>` with `<filename>`, `<size><width><height>` (-> declared_size; 0 or
missing means unknown, as LabelImg writes when it could not read the image) and per object
`<name>`, `<difficult>`, `<bndbox><xmin><ymin><xmax><ymax>`.
- The image is `<filename>` in `JPEGImages/` (or beside the xml); if absent or not found
  there, the xml's stem with an image suffix (reported as fixed). `<path>` (absolute, from
  the annotating machine) and `<folder>` are ignored.
- VOC coordinates are 1-based pixel indices with xmax inclusive, so the 0-based corners are
  x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax (xmin == xmax is one pixel wide).
- `difficult` objects are kept: they are real litter, VOC only leaves them out of its
  evaluation. `truncated`, `pose` and `<part>` are ignored.
- Class names: first-seen order, reading the xml files in sorted path order.
- Each image has its own xml, so every problem in it is a bad record of that image (never
  fatal): malformed XML (record "XML"), root not <annotation>, image missing or outside the
  root, non-integer size, an object without <name>, <bndbox> or one of its coordinates, a
  non-numeric coordinate, xmax < xmin or ymax < ymin. Also bad: an ImageSets line whose xml
  does not exist, an image listed in two split files (it stays in the first).
"""

from __future__ import annotations

import glob
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from detection.formats import SPLIT_DIR_NAMES, add_unique, resolve_under, split_name
from detection.records import (IMAGE_SUFFIXES, SOURCE_SPLITS, BadRecord, Problems, SourceBox,
                               SourceImage, fatal, image_key, resolve_inside)


def read_voc(path: Path, problems: Problems) -> tuple[list[SourceImage], list[str]]:
    root = path
    if not root.is_dir():
        raise fatal(root, "path", "a Pascal VOC dataset is a folder (Annotations/ + JPEGImages/, "
                                  "or *.xml beside images)")
    devkit = (root / "Annotations").is_dir()
    xml_files = sorted((root / "Annotations").glob("*.xml") if devkit else root.rglob("*.xml"))
    if not xml_files:
        raise fatal(root, "folder", f"no *.xml found{' in Annotations/' if devkit else ''}")
    splits = imageset_splits(root, {f.stem for f in xml_files}, problems) if devkit else {}
    images: list[SourceImage] = []
    seen: dict[str, SourceImage] = {}
    for xml_file in xml_files:
        if devkit:
            base, split = root / "JPEGImages", splits.get(xml_file.stem)
        else:
            first = xml_file.relative_to(root).parts[0]
            base, split = xml_file.parent, split_name(first) if first in SPLIT_DIR_NAMES else None
        image = read_xml(root, xml_file, base, split, problems)
        if image is not None:
            add_unique(images, seen, image, problems)
    return images, list(dict.fromkeys(box.label for image in images for box in image.boxes))


def imageset_splits(root: Path, stems: set[str], problems: Problems) -> dict[str, str]:
    """xml stem -> train | val | test from ImageSets/Main/{train,val,test}.txt."""
    splits: dict[str, str] = {}
    for split in SOURCE_SPLITS:
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            continue
        for number, line in enumerate(listing.read_text(encoding="utf-8-sig").splitlines(), 1):
            image_id = line.split()[0] if line.split() else None
            if image_id is None:
                continue
            if image_id not in stems:
                problems.bad(listing, f"line {number}", f"no Annotations/{image_id}.xml")
            elif image_id in splits:
                problems.bad(listing, f"line {number}", f"{image_id} is also listed in {splits[image_id]}.txt")
            else:
                splits[image_id] = split
    return splits


def read_xml(root: Path, xml_file: Path, base: Path, split: str | None, problems: Problems
             ) -> SourceImage | None:
    """The image one VOC xml describes; None after a bad record."""
    try:
        resolve_inside(root, xml_file.relative_to(root).as_posix())
        annotation = ET.parse(xml_file).getroot()
    except BadRecord as err:
        problems.bad(xml_file, "file", str(err))
        return None
    except ET.ParseError as err:
        problems.bad(xml_file, "XML", f"malformed XML: {err}")
        return None
    if annotation.tag != "annotation":
        problems.bad(xml_file, "XML", f"root element is <{annotation.tag}>, expected <annotation>")
        return None
    filename = (annotation.findtext("filename") or "").strip()
    record = "filename"
    try:
        image = voc_image_file(root, base, xml_file, filename)
        record = "size"
        size = voc_size(annotation.find("size"))
        boxes = []
        for index, obj in enumerate(annotation.findall("object"), 1):
            record = f"object {index}"
            boxes.append(voc_box(obj, record))
    except BadRecord as err:
        problems.bad(xml_file, record, str(err))
        return None
    if filename and image.name != Path(filename).name:
        problems.fix(xml_file, "filename", f"{filename!r} not found in {base}; using {image.name}")
    record = f"image {image.relative_to(root).as_posix()}"
    return SourceImage(image_key(root, image), image, xml_file, record, tuple(boxes), split, size)


def voc_image_file(root: Path, base: Path, xml_file: Path, filename: str) -> Path:
    """`filename` under `base`, else `<xml stem>.<image suffix>` under `base`."""
    if filename:
        candidate = resolve_under(root, base, filename)
        if candidate.is_file():
            return candidate
    for candidate in sorted(base.glob(glob.escape(xml_file.stem) + ".*")):
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            return resolve_under(root, base, candidate.name)
    raise BadRecord(f"image file {filename or xml_file.stem + '.*'!r} not found in {base}")


def voc_size(size: ET.Element | None) -> tuple[int, int] | None:
    if size is None or size.findtext("width") is None or size.findtext("height") is None:
        return None
    width, height = (_number(size.findtext(tag), f"<size><{tag}>") for tag in ("width", "height"))
    if width <= 0 or height <= 0:
        return None
    if not (width.is_integer() and height.is_integer()):
        raise BadRecord(f"<size> must be whole pixels, got {width} x {height}")
    return int(width), int(height)


def voc_box(obj: ET.Element, record: str) -> SourceBox:
    """One <object> as 0-based pixel corners (VOC is 1-based with xmax inclusive)."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise BadRecord("missing <name>")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise BadRecord(f"{name!r}: missing <bndbox>")
    xmin, ymin, xmax, ymax = (_number(bndbox.findtext(tag), f"{name!r}: <bndbox><{tag}>")
                              for tag in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise BadRecord(f"{name!r}: xmax < xmin or ymax < ymin ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})")
    return SourceBox(name, xmin - 1, ymin - 1, xmax, ymax, record)


def _number(text: str | None, what: str) -> float:
    if text is None or not text.strip():
        raise BadRecord(f"{what} is missing")
    try:
        value = float(text)
    except ValueError:
        raise BadRecord(f"{what} is not a number: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise BadRecord(f"{what} is not finite: {text.strip()!r}")
    return value
