"""YOLO reader: ultralytics `data.yaml` layouts, Roboflow YOLO exports, bare images/ + labels/.

Layouts (the dataset root is the folder holding the yaml, or the folder given):
- `data.yaml` (or `data.yml`, `dataset.yaml`): `names` (a list, or a dict with keys 0..n-1),
  optional `path`, and `train` / `val` / `test`: each a folder of images (searched
  recursively), a .txt list of images (lines relative to the txt's folder), or a list of those.
  An absolute `path` or one leading out of the root (stale, from another machine) is ignored
  and reported as fixed. An entry leading out of the root, e.g. Roboflow's `../train/images`,
  is read without its leading `..` (`train/images`), reported as fixed; nothing outside the
  root is ever read.
- No yaml: `images/` + `labels/` (split folders `images/{train,valid,val,test}/` allowed) or
  Roboflow's `{train,valid,test}/images` + `labels/`, names from `classes.txt` (one per line,
  in the root or in `labels/`).

Label file: the image's last `images` folder under the root replaced by `labels`, suffix .txt
(ultralytics' rule); beside the image if it is in no `images` folder. A missing or empty label
file means a clean image (standard YOLO); a label file without image is ignored (fixed note).
Lines: `cls cx cy w h` normalised to [0, 1] (1e-3 tolerance; ultralytics rejects > 1 too), or
an ultralytics segment line `cls x1 y1 ... xk yk` (k >= 3), whose enclosing box is used. Pixels
use the size from the image header (PIL, lazy, only for images with boxes):
x0 = (cx - w / 2) * width, x1 = (cx + w / 2) * width, likewise y with height.

Fatal: data.yaml unreadable, empty, malformed, not a mapping, `names` missing or not 0..n-1,
`nc` disagreeing with `names`, no train/val/test entry; no yaml and no classes.txt.
Bad records: a split entry missing or outside the root, a listed image missing, a line not of
5 (or 1 + 2k) numbers, a class id not an integer in [0, len(names)), coordinates not finite or
not normalised, a negative width or height, an unreadable image header.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from detection.formats import (
    SPLIT_DIR_NAMES,
    YOLO_YAML_NAMES,
    add_unique,
    read_annotation_text,
    resolve_under,
    split_name,
)
from detection.records import (
    IMAGE_SUFFIXES,
    BadRecord,
    MissingSplit,
    Problems,
    SourceBox,
    SourceImage,
    fatal,
    image_key,
    resolve_inside,
)
from scenes.prepared import label_path

SPLIT_KEYS = ("train", "val", "test")
NORMALISED_TOLERANCE = 1e-3


def read_yolo(path: Path, problems: Problems) -> tuple[list[SourceImage], list[str]]:
    yaml_file = path if path.is_file() else next(
        (path / name for name in YOLO_YAML_NAMES if (path / name).is_file()), None)
    if yaml_file is None:
        root = path
        names = classes_txt(root)
        sources = bare_sources(root)
    else:
        root = yaml_file.parent
        config = load_data_yaml(yaml_file)
        names = yaml_names(yaml_file, config)
        sources = yaml_sources(root, yaml_file, config, problems)
    images: list[SourceImage] = []
    seen: dict[str, SourceImage] = {}
    used_labels: set[Path] = set()
    for split, source in sources:
        for image_path in list_images(root, source, problems):
            used_labels.add(root / label_name(root, image_path))
            image = read_image(root, image_path, names, split, problems)
            if image is not None:
                add_unique(images, seen, image, problems)
    note_orphan_labels(root, [s for _, s in sources if s.is_dir()], used_labels, problems)
    return images, names


def load_data_yaml(yaml_file: Path) -> dict[str, Any]:
    text = read_annotation_text(yaml_file)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise fatal(yaml_file, where, f"malformed YAML: {problem}".replace("\n", " ")) from None
    if not isinstance(config, dict):
        raise fatal(yaml_file, "top level", "expected a mapping with names and train/val/test")
    return config


def yaml_names(yaml_file: Path, config: dict[str, Any]) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict):
        if sorted(names, key=str) != sorted(range(len(names)), key=str):
            raise fatal(yaml_file, "names", f"dict keys must be 0..{len(names) - 1}, got {list(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or any(n is None or str(n) == "" for n in names):
        raise fatal(yaml_file, "names", "missing, or not a list / {index: name} dict of class names")
    if config.get("nc") is not None and config["nc"] != len(names):
        raise fatal(yaml_file, "nc", f"nc is {config['nc']} but names has {len(names)} entries")
    return [str(name) for name in names]


def classes_txt(root: Path) -> list[str]:
    for file in (root / "classes.txt", root / "labels" / "classes.txt"):
        if file.is_file():
            names = [line.strip() for line in file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            if not names:
                raise fatal(file, "file", "empty file")
            return names
    raise fatal(root, "class names", f"not found: expected {' or '.join(YOLO_YAML_NAMES)} (names) or classes.txt")


def yaml_sources(root: Path, yaml_file: Path, config: dict[str, Any], problems: Problems
                 ) -> list[tuple[str, Path]]:
    """(split, folder or .txt list) for every train / val / test entry found."""
    if not any(config.get(key) for key in SPLIT_KEYS):
        raise fatal(yaml_file, "train", "no train / val / test entry")
    base = yaml_base(root, yaml_file, config.get("path"), problems)
    sources = []
    for split in SPLIT_KEYS:
        entries = config.get(split) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            try:
                sources.append((split, split_source(root, base, yaml_file, split, entry, problems)))
            except MissingSplit as err:
                problems.missing_split(yaml_file, split, str(err))
            except BadRecord as err:
                problems.bad(yaml_file, split, str(err))
    return sources


def yaml_base(root: Path, yaml_file: Path, value: Any, problems: Problems) -> Path:
    if value in (None, "", ".") or (isinstance(value, str) and Path(value).is_absolute()
                                    and Path(value).resolve() == root.resolve()):
        return root
    try:
        return resolve_under(root, root, str(value))
    except BadRecord as err:
        problems.fix(yaml_file, "path", f"ignored ({err}); entries are read relative to {root}")
        return root


def split_source(root: Path, base: Path, yaml_file: Path, split: str, entry: Any, problems: Problems) -> Path:
    if not isinstance(entry, str) or not entry:
        raise BadRecord(f"expected a folder or .txt file, got {entry!r}")
    try:
        candidate = resolve_under(root, base, entry)
    except BadRecord:
        parts = list(Path(entry.replace("\\", "/")).parts)
        while parts and parts[0] == "..":
            parts.pop(0)
        if Path(entry).is_absolute() or not parts or ".." in parts:
            raise
        candidate = resolve_under(root, base, "/".join(parts))
        problems.fix(yaml_file, split, f"{entry!r} leads out of the dataset root; read as {'/'.join(parts)!r}")
    if not candidate.exists():
        raise MissingSplit(f"{entry!r} not found (looked for {candidate})")
    return candidate


def bare_sources(root: Path) -> list[tuple[str | None, Path]]:
    if (root / "images").is_dir():
        folders = [d for d in sorted((root / "images").iterdir()) if d.is_dir() and d.name in SPLIT_DIR_NAMES]
        return [(split_name(d.name), d) for d in folders] or [(None, root / "images")]
    sources = [(split_name(s), root / s / "images") for s in SPLIT_DIR_NAMES if (root / s / "images").is_dir()]
    if not sources:
        raise fatal(root, "folder", "no YOLO layout: expected data.yaml, images/ + labels/ or train|valid|test/images")
    return sources


def list_images(root: Path, source: Path, problems: Problems) -> list[Path]:
    """The image files of a folder (recursive, sorted) or of a .txt list, checked to lie inside the root."""
    found = []
    if source.is_dir():
        for file in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                found.append(resolve_inside(root, file.relative_to(root).as_posix()))
            except BadRecord as err:
                problems.bad(file, "image", str(err))
        return [file for file in found if file.is_file()]
    for number, line in enumerate(source.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            try:
                file = resolve_under(root, source.parent, line.strip())
                if not file.is_file():
                    raise BadRecord(f"image file {line.strip()!r} not found")
                found.append(file)
            except BadRecord as err:
                problems.bad(source, f"line {number}", str(err))
    return found


def label_name(root: Path, image: Path) -> str:
    """The label file of an image, relative to the root (ultralytics' images/ -> labels/ rule)."""
    relative = image.relative_to(root)
    try:
        return label_path(relative).as_posix()
    except ValueError:  # no `images` folder on the way: the label file lies beside the image
        return relative.with_suffix(".txt").as_posix()


def read_image(root: Path, image: Path, names: list[str], split: str | None, problems: Problems
               ) -> SourceImage | None:
    """The image with its boxes in pixels; None (after a bad record) if its labels are unusable."""
    name = label_name(root, image)
    try:
        label = resolve_inside(root, name)
    except BadRecord as err:
        problems.bad(root / name, "label file", str(err))
        return None
    rows = read_label_file(label, len(names), problems) if label.is_file() else []
    if rows is None:
        return None
    key, annotation_file = image_key(root, image), label if label.is_file() else image
    record = f"image {image.relative_to(root).as_posix()}"
    if not rows:
        return SourceImage(key, image, annotation_file, record, (), split)
    try:
        with Image.open(image) as opened:
            width, height = opened.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        problems.bad(image, "image", f"unreadable image: {err}")
        return None
    boxes = tuple(SourceBox(names[c], (cx - w / 2) * width, (cy - h / 2) * height,
                            (cx + w / 2) * width, (cy + h / 2) * height, f"line {number}")
                  for number, (c, cx, cy, w, h) in rows)
    return SourceImage(key, image, annotation_file, record, boxes, split)


def read_label_file(label: Path, n_names: int, problems: Problems
                    ) -> list[tuple[int, tuple[int, float, float, float, float]]] | None:
    """(line number, (cls, cx, cy, w, h)) of every non-blank line; None after a bad line."""
    try:
        lines = label.read_text(encoding="utf-8-sig").splitlines()
    except (UnicodeDecodeError, OSError) as err:
        problems.bad(label, "file", f"unreadable label file: {err}")
        return None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((number, parse_label_line(line, n_names)))
            except BadRecord as err:
                problems.bad(label, f"line {number}", str(err))
                return None
    return rows


def parse_label_line(line: str, n_names: int) -> tuple[int, float, float, float, float]:
    tokens = line.split()
    if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
        raise BadRecord(f"expected 'class cx cy w h' (5 numbers), got {len(tokens)} values: {line.strip()!r}")
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        raise BadRecord(f"not a number in {line.strip()!r}") from None
    if not values[0].is_integer():
        raise BadRecord(f"class id {tokens[0]!r} is not an integer")
    cls = int(values[0])
    if not 0 <= cls < n_names:
        raise BadRecord(f"unknown class id {cls} (names has {n_names})")
    coords = values[1:]
    if not all(math.isfinite(v) for v in coords):
        raise BadRecord(f"coordinates must be finite numbers: {line.strip()!r}")
    if any(v < -NORMALISED_TOLERANCE or v > 1 + NORMALISED_TOLERANCE for v in coords):
        raise BadRecord(f"coordinates not normalised to [0, 1] (pixels?): {line.strip()!r}")
    if len(coords) == 4:
        cx, cy, w, h = coords
        if w < 0 or h < 0:
            raise BadRecord(f"negative width or height: {line.strip()!r}")
        return cls, cx, cy, w, h
    xs, ys = coords[0::2], coords[1::2]
    return cls, (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)


def note_orphan_labels(root: Path, folders: list[Path], used: set[Path], problems: Problems) -> None:
    """Report label files (in the labels folder of each image folder) that no image uses."""
    for folder in folders:
        try:
            labels = root / label_path(folder.relative_to(root) / "_").parent
        except ValueError:
            continue
        if labels.is_dir() and labels != folder:
            for txt in sorted(labels.rglob("*.txt")):
                if txt not in used and txt.name != "classes.txt":
                    problems.fix(txt, "label file", "no matching image; ignored")
