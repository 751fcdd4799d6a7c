"""Dataset format readers for the import stage: COCO (incl. TACO), YOLO (ultralytics, Roboflow), VOC.

`detect_format(path)` names the format of a dataset path (for `dataset.format: auto`);
`read_dataset(path, fmt, problems)` returns the format-neutral `SourceImage` records and the
source class names in the source's declared order. Readers only parse (see `detection.records`).

Rules shared by every reader (copy these into the README):
- The dataset root is the folder given, or the folder holding the given annotation file
  (COCO json, YOLO data.yaml). Every file name is resolved with `records.resolve_inside`:
  absolute names, `..` and symlinks leading out of the root are bad records.
- A bad record (box, label line, annotation, object) makes its whole image bad: keeping the
  image with the remaining boxes would teach the detector that the object is background.
- Two images with the same key (path under the root without suffix, e.g. `a.png` and `a.jpg`,
  or one file listed twice) are a bad record: "duplicate image ...".
- Splits: a source split named `valid` / `validation` is `val`. If the source names only one
  split (e.g. a Roboflow export with `train/` only), it is not a split: every image gets
  `split=None` and the import stage splits them.
- Geometry is passed on as read (degenerate or out-of-image boxes included): clipping against
  the real image size and the minimum box size are decided once, in `detection.prepare`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from core.errors import StageError
from detection.records import Problems, SourceImage, fatal, resolve_inside

FORMATS = ("coco", "yolo", "voc")
YOLO_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
SPLIT_DIR_NAMES = ("train", "valid", "val", "test")
_SPLIT_WORD = re.compile(r"(?:^|[^a-z])(train|validation|valid|val|test)(?![a-z])")


def read_annotation_text(path: Path) -> str:
    """The text of an annotation file; unreadable, non-UTF-8 or empty is fatal (one line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise fatal(path, "file", f"not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise fatal(path, "file", f"unreadable: {err.strerror}") from None
    if not text.strip():
        raise fatal(path, "file", "empty file")
    return text


def dataset_root(path: Path) -> Path:
    """The folder image keys and the traversal check are relative to: `path`, or its folder if a file."""
    path = Path(path)
    return path.parent if path.is_file() else path


def split_name(text: str) -> str | None:
    """'instances_train2017' -> train, '_val' / 'valid' -> val, 'test-dev' -> test, else None."""
    match = _SPLIT_WORD.search(text.lower())
    if match is None:
        return None
    word = match.group(1)
    return "val" if word.startswith("val") else word


def resolve_under(root: Path, base: Path, name: str) -> Path:
    """`name` relative to `base` (a folder under `root`); raises BadRecord if it leaves `base` or `root`."""
    resolve_inside(root, base.relative_to(root).as_posix())
    return resolve_inside(base, name)


def add_unique(images: list[SourceImage], seen: dict[str, SourceImage], image: SourceImage,
               problems: Problems) -> None:
    """Append `image` unless an image with the same key was read already (then a bad record)."""
    first = seen.get(image.key)
    if first is not None:
        problems.bad(image.annotation_file, image.record,
                     f"duplicate image {image.key!r} (also {first.annotation_file.name}: {first.record})")
        return
    seen[image.key] = image
    images.append(image)


def detect_format(path: Path) -> str:
    """coco | yolo | voc for a dataset path; StageError naming what was looked for otherwise."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: dataset path not found")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        raise StageError(f"{path}: cannot detect the dataset format: expected a COCO .json or a YOLO .yaml file")
    if (path / "Annotations").is_dir():
        return "voc"
    if any((path / name).is_file() for name in YOLO_YAML_NAMES):
        return "yolo"
    yolo_places = [path, *(path / s for s in SPLIT_DIR_NAMES)]
    if any((p / "images").is_dir() and (p / "labels").is_dir() for p in yolo_places):
        return "yolo"
    json_places = [path, path / "annotations", *(path / s for s in SPLIT_DIR_NAMES)]
    if any(place.is_dir() and any(place.glob("*.json")) for place in json_places):
        return "coco"
    if any(path.glob("*.xml")) or any(any((path / s).glob("*.xml")) for s in SPLIT_DIR_NAMES):
        return "voc"
    raise StageError(
        f"{path}: cannot detect the dataset format: looked for a Pascal VOC Annotations/ folder, "
        f"a YOLO {' / '.join(YOLO_YAML_NAMES)} or images/ + labels/ folders, a COCO *.json "
        f"(also in annotations/ or train|valid|val|test/) and Pascal VOC *.xml files")


def read_dataset(path: Path, fmt: str, problems: Problems) -> tuple[list[SourceImage], list[str]]:
    """The images of the dataset at `path` in format `fmt`, and its class names in declared order."""
    from detection.formats import coco, voc, yolo  # here: the readers import this module's helpers

    readers = {"coco": coco.read_coco, "yolo": yolo.read_yolo, "voc": voc.read_voc}
    if fmt not in readers:
        raise StageError(f"{path}: unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: dataset path not found")
    images, names = readers[fmt](path, problems)
    if len({image.split for image in images} - {None}) == 1:
        images = [replace(image, split=None) for image in images]
    return images, names
