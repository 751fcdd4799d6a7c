"""The unlabelled pool: road images without boxes, beside the boxed dataset (params `dataset.unlabelled`).

Every image under the folder (any depth) joins the pool. An optional `tags.csv` in the folder
(columns `file,tags`; `file` relative to the folder, `tags` ';'-separated class names, mapped as
box classes are) says what some of them show: a listed image with tags, or with the single tag
`clean` (no litter), has known tags; an image with an empty `tags` cell or no row at all is
unknown. Known is not the same as clean: an unknown image may well show litter, so it never
becomes a negative example (classifier, judge), a canvas, or a clean road in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import StageError
from core.tables import read_table
from detection.records import IMAGE_SUFFIXES, BadRecord, Problems, SourceImage, image_key, resolve_inside

TAGS_FILE = "tags.csv"
CLEAN_TAG = "clean"
POOL_KEY_PREFIX = "unlabelled/"   # pool image keys live apart from the boxed dataset's


@dataclass(frozen=True)
class PoolRecord:
    source: SourceImage             # no boxes
    tags: tuple[str, ...] | None    # source tag names as written (() for `clean`); None: unknown


def read_pool(folder: Path, problems: Problems) -> list[PoolRecord]:
    """The images under `folder` with their tags from `folder/tags.csv` (module docstring)."""
    if not folder.is_dir():
        raise StageError(f"{folder}: unlabelled pool folder not found (params.yaml dataset.unlabelled); "
                         "an empty folder means no pool")
    rows = read_tags(folder, problems)
    images = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        relative = path.relative_to(folder).as_posix()
        _, tags = rows.pop(relative, (0, None))
        try:
            resolve_inside(folder, relative)  # a symlink leading out of the folder is refused
        except BadRecord as err:
            problems.bad(path, "unlabelled image", str(err))
            continue
        source = SourceImage(POOL_KEY_PREFIX + image_key(folder, path), path, path, "unlabelled image", ())
        images.append(PoolRecord(source, tags))
    for relative, (line, _) in rows.items():
        problems.bad(folder / TAGS_FILE, f"line {line}", f"image file {relative!r} is not in the pool folder")
    return images


def read_tags(folder: Path, problems: Problems) -> dict[str, tuple[int, tuple[str, ...] | None]]:
    """relative file name -> (line, tag names) of each row of `folder/tags.csv`: () for `clean`, None for
    an empty cell (listed, but its content unknown). No file: no rows."""
    tags_file = folder / TAGS_FILE
    if not tags_file.is_file():
        return {}
    frame = read_table(tags_file, ("file", "tags"), made_by="import", text_columns=("file", "tags"))
    rows: dict[str, tuple[int, tuple[str, ...] | None]] = {}
    for line, row in enumerate(frame.itertuples(), start=2):
        try:
            resolve_inside(folder, row.file)
            names = tuple(t.strip() for t in row.tags.split(";") if t.strip())
            if CLEAN_TAG in names and len(names) > 1:
                raise BadRecord(f"tags {row.tags!r}: '{CLEAN_TAG}' (no litter) cannot go with other tags")
            relative = Path(row.file.replace("\\", "/")).as_posix()
            if relative in rows:
                raise BadRecord(f"file {row.file!r} is listed twice (also line {rows[relative][0]})")
        except BadRecord as err:
            problems.bad(tags_file, f"line {line}", str(err))
            continue
        rows[relative] = (line, (() if names == (CLEAN_TAG,) else names) if names else None)
    return rows
