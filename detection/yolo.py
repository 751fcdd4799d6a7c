"""YOLO detector through ultralytics, fully offline: setup, settings, dataset views, prediction
(the boxes it returns and their label-file form: `scenes.boxes`; training: `detection.yolo_train`).

Ultralytics reads its settings and fonts from `YOLO_CONFIG_DIR` when it is first imported, so
every import of it in this project goes through `ultralytics_offline()`, which first points that
variable at the project-local `.yolo_config/` (git-ignored), sets `YOLO_OFFLINE`, puts a local
font there under the names ultralytics would otherwise download (Arial.ttf, Arial.Unicode.ttf:
matplotlib's bundled DejaVuSans) and turns off sync, hub and every logger integration. The
user's global ultralytics settings are never written.

Training data reach ultralytics as a throw-away YOLO layout in a temp dir (`write_dataset_view`):
images and labels are copied there, so ultralytics' label caches (`*.cache`) land in that temp
dir and never inside a DVC output such as `data/prepared/`.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Collection, Sequence

import numpy as np
import yaml

from core.errors import StageError, warn
from core.params import check_at_least
from detection.budget import BudgetSettings
from detection.realism import SOURCES, gate_left_out
from scenes.boxes import Detections
from scenes.prepared import label_path, load_manifest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / ".yolo_config"
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
VARIANTS = ("baseline", "augmented", "selftrain", "copypaste", "inpaint")
AMP_CHOICES = (False, "bf16", "auto")
# The extra training images of a variant: (folder under paths.pseudo, MixSettings field capping them or None).
VARIANT_POOLS = {"augmented": ("synthetic", "synthetic_ratio"), "selftrain": ("tagged", "tagged_ratio"),
                 "copypaste": ("copypaste", "synthetic_ratio"), "inpaint": ("inpaint", "synthetic_ratio")}
# Every ultralytics integration that could log or upload; all off.
OFFLINE_SETTINGS = {k: False for k in ("sync", "hub", "dvc", "clearml", "comet", "mlflow", "neptune",
                                       "raytune", "tensorboard", "wandb", "vscode_msg", "openvino_msg")}


@dataclass(frozen=True)
class TrainSettings:
    """params.yaml `yolo.train`: what every variant trains with (identical across variants)."""

    model: str                    # a model YAML shipped with ultralytics (built from scratch) or a local .pt
    imgsz: int                    # network input side in px, a multiple of 32
    batch: int
    device: Any                   # auto (CUDA when present, else cpu) | cpu | 0 | [0, 1] (DDP)
    workers: int                  # dataloader workers
    amp: Any                      # false | bf16 | auto (true would make ultralytics fetch yolo26n.pt to check AMP)
    plots: bool                   # ultralytics' own training plots (label grids, curves)
    channels_last: bool           # NHWC weights; ultralytics does this on CUDA only, we also on CPU
    extra: dict                   # any other ultralytics train argument (mosaic, lr0, ...)

    def __post_init__(self) -> None:
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"imgsz: must be a positive multiple of 32, got {self.imgsz}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"amp: must be false, bf16 or auto, got {self.amp!r}")
        for key, owner in (("channels_last", "yolo.train.channels_last"), ("epochs", "yolo.budget"),
                           ("patience", "yolo.budget"), ("val", "yolo.budget")):
            if key in self.extra:
                raise ValueError(f"extra: {key} is set by {owner}, not by an ultralytics argument")
        check_at_least(self, 1, "batch")


@dataclass(frozen=True)
class MixSettings:
    """params.yaml `yolo.mix`: how many added images the augmented and selftrain variants get, and which."""

    synthetic_ratio: float            # augmented: at most this many synthetic images per real train image
    tagged_ratio: float               # selftrain: at most this many pseudo-labelled tagged images per real one
    seed: int                         # which images fill a cap (the same for every training seed)

    def __post_init__(self) -> None:
        check_at_least(self, 0, "synthetic_ratio", "tagged_ratio", "seed")


@dataclass(frozen=True)
class YoloParams:
    """params.yaml `yolo`: shared train settings, the budget, the training seeds and the variants' mix."""

    train: TrainSettings
    budget: BudgetSettings            # how long every detector trains (detection.budget)
    seeds: tuple[int, ...]            # one training per seed and variant: <paths.yolo>/<variant>/seed_<s>/
    parallel: int                     # a variant's seeds trained at once (see train_seeds)
    equal_steps: bool                 # every variant trains the budget's batches (`detection.budget.scaled_plan`)
    mix: MixSettings

    def __post_init__(self) -> None:
        check_at_least(self, 1, "parallel")
        if isinstance(self.train.device, (list, tuple)):
            if self.parallel > 1:
                raise ValueError("parallel: a DDP training (train.device is a list) takes its GPUs alone; set parallel: 1")
            if self.budget.searched:
                raise ValueError("budget: a DDP training (train.device is a list) cannot search the budget (its "
                                 "processes run ultralytics' own trainer); set budget.epochs to a number")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected a non-empty list of distinct seeds, got {list(self.seeds)}")
        if any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds: every seed must be an integer >= 0, got {list(self.seeds)}")


def seed_dir(variant_dir: Path | str, seed: int) -> Path:
    """Where the training with `seed` of a variant lives: `<variant_dir>/seed_<seed>`."""
    return Path(variant_dir) / f"seed_{seed}"


def ultralytics_offline() -> ModuleType:
    """Import ultralytics with no network use (see module docstring); returns the module."""
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_OFFLINE"] = "true"
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # ultralytics imports albumentations
        os.environ.setdefault("YOLO_CONFIG_DIR", str(CONFIG_DIR))
        user_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
        user_dir.mkdir(parents=True, exist_ok=True)
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in FONT_NAMES:
            if not (user_dir / name).exists():
                shutil.copyfile(font, user_dir / name)
    import torch
    import ultralytics
    from ultralytics.utils import SETTINGS, patches, torch_utils

    # ultralytics sets CPU torch to its own thread count (cores - 1, so 1 on 2 cores) whenever it
    # selects a device; the stage's count (`launch.torch_threads`) stays, so the weights depend on
    # the params, not on how many cores the machine has.
    torch_utils.NUM_THREADS = torch.get_num_threads()

    # ultralytics wraps PIL.Image.open process-wide so that an unidentifiable image triggers a
    # pip install of pi-heif; marking its plugins as registered keeps plain PIL behaviour.
    patches._pil_plugins_registered = True
    stale = {k: v for k, v in OFFLINE_SETTINGS.items() if k in SETTINGS and SETTINGS[k] != v}
    if stale:
        SETTINGS.update(stale)
    return ultralytics


def resolve_device(device: Any) -> Any:
    """`auto` -> CUDA device 0 when present, else cpu; a list becomes ultralytics' DDP device string."""
    if device == "auto":
        import torch

        return 0 if torch.cuda.is_available() else "cpu"
    if isinstance(device, (list, tuple)):
        return ",".join(str(d) for d in device)
    return device


# --------------------------------------------------------------------------- dataset views

@dataclass(frozen=True)
class LabelledImage:
    """One training image: its file, its YOLO label file (None = background) and a unique name."""

    image: Path
    label: Path | None
    name: str


def prepared_split(prepared: Path | str, split: str) -> list[LabelledImage]:
    """The images of one boxed split of `data/prepared` with their label files."""
    frame = load_manifest(prepared, (split,))
    for row in frame.itertuples():
        if not Path(row.abspath).is_file():
            raise StageError(f"{Path(prepared) / 'manifest.csv'}: image {row.image_id}: {row.path} not found; "
                             "rerun the import stage")
    return [LabelledImage(Path(p), label_path(p), f"real_{i}") for i, p in zip(frame["image_id"], frame["abspath"])]


def pseudo_split(pseudo_dir: Path | str, ratio: float, n_real: int, seed: int,
                 left_out: Collection[str] = ()) -> list[LabelledImage]:
    """Images of a pseudo-labelled layout (`detection.pseudo_label`) but those named in `left_out`
    (the quality gate's), at most `ratio * n_real` of them.

    The subset is a seeded random sample, so the same params give the same training set. An empty
    layout (the baseline kept nothing) gives no images and a warning, not an error.
    """
    pseudo_dir = Path(pseudo_dir)
    if not (pseudo_dir / "manifest.csv").is_file():
        raise StageError(f"{pseudo_dir}/manifest.csv: not found; run the pseudo-label stage first")
    images = [p for p in sorted((pseudo_dir / "images").glob("*.png")) if p.stem not in left_out]
    if not images:  # a weak baseline may keep nothing: train on the real images, say so
        warn(str(pseudo_dir), "no pseudo-labelled images kept; training on real images only")
    if ratio * n_real < len(images):
        cap = int(round(ratio * n_real))
        images = sorted(random.Random(seed).sample(images, cap))
    return [LabelledImage(p.resolve(), label_path(p.resolve()), f"{pseudo_dir.name}_{p.stem}") for p in images]


def write_dataset_view(root: Path, splits: dict[str, list[LabelledImage]], names: Sequence[str]) -> Path:
    """Copy images and labels into an ultralytics YOLO layout under `root`; returns its data.yaml."""
    for split, items in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for item in items:
            shutil.copyfile(item.image, root / "images" / split / f"{item.name}{item.image.suffix}")
            target = root / "labels" / split / f"{item.name}.txt"
            if item.label is not None and item.label.is_file():
                shutil.copyfile(item.label, target)
            else:
                target.write_text("")
    data = {"path": str(root.resolve()), **{s: f"images/{s}" for s in splits}, "names": dict(enumerate(names))}
    data_yaml = root / "data.yaml"
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml


def added_images(variant: str, params: YoloParams, pseudo_root: Path | str, n_real: int) -> list[LabelledImage]:
    """The images a variant adds to the real `train` split (none for the baseline); every seed gets the same."""
    if variant not in VARIANTS:
        raise StageError(f"params: variant '{variant}': unknown; known: {', '.join(VARIANTS)}")
    if variant not in VARIANT_POOLS:
        return []
    folder, cap = VARIANT_POOLS[variant]
    ratio = math.inf if cap is None else getattr(params.mix, cap)
    left_out = gate_left_out(pseudo_root, folder) if folder in SOURCES else ()
    return pseudo_split(Path(pseudo_root) / folder, ratio, n_real, params.mix.seed, left_out)


def variant_splits(variant: str, params: YoloParams, prepared: Path | str,
                   pseudo_root: Path | str) -> dict[str, list[LabelledImage]]:
    """Train/val images of a variant: real train + the variant's `added_images`, real val."""
    train = prepared_split(prepared, "train")
    if not train:
        raise StageError(f"{prepared}/manifest.csv: no 'train' images")
    train += added_images(variant, params, pseudo_root, len(train))
    return {"train": train, "val": prepared_split(prepared, "val")}


def variant_settings(variant: str, params: YoloParams) -> dict[str, Any]:
    """The `yolo` settings a variant trains by (its params.json; dvc.yaml's `params:` of train_yolo):
    the baseline finds the budget (`budget`), every other variant trains it (`equal_steps`) with the
    images it adds (`mix`)."""
    shared = {"train": params.train, "seeds": params.seeds, "parallel": params.parallel}
    if variant == "baseline":
        return {**shared, "budget": params.budget}
    return {**shared, "equal_steps": params.equal_steps, "mix": params.mix}


# --------------------------------------------------------------------------- train / predict

def check_local_weights(model: str) -> None:
    """A `.pt` model must be a local file: ultralytics would download a missing one of a known name."""
    if model.endswith(".pt") and not Path(model).is_file():
        raise StageError(f"params.yaml: yolo.train.model: {model}: no such file; the pipeline never downloads weights "
                         "(download the checkpoint once yourself and give its path)")



# --------------------------------------------------------------------------- predict

@dataclass(frozen=True)
class PredictSettings:
    """The `predict` block of params.yaml `evaluate` and `pseudo_label`: how a detector is run."""

    conf: float               # confidence floor
    iou: float                # NMS IoU
    max_det: int              # boxes per image at most
    device: Any               # auto | cpu | 0 | ...
    batch: int                # images per predict call

    def __post_init__(self) -> None:
        if not 0 <= self.conf <= 1 or not 0 <= self.iou <= 1:
            raise ValueError(f"conf and iou: must be in [0, 1], got {self.conf} and {self.iou}")
        check_at_least(self, 1, "max_det", "batch")


def load_model(weights: Path | str):
    """A trained YOLO model from `best.pt` (ultralytics checkpoints are pickles: only load your own)."""
    weights = Path(weights)
    if not weights.is_file():
        raise StageError(f"{weights}: weights not found; run train_yolo first")
    YOLO = ultralytics_offline().YOLO
    try:
        return YOLO(str(weights))
    except Exception as err:  # ultralytics raises anything from a damaged pickle; the stage needs one line
        raise StageError(f"{weights}: unreadable YOLO weights ({type(err).__name__}: {err}); rerun "
                         "train_yolo".replace("\n", " ")) from None


def predict(model, images: Sequence[np.ndarray], settings: PredictSettings, imgsz: int) -> list[Detections]:
    """Run `model.predict` at network size `imgsz` on RGB uint8 HxWx3 arrays; boxes in the images' pixels."""
    out: list[Detections] = []
    device = resolve_device(settings.device)
    for start in range(0, len(images), settings.batch):
        chunk = [np.ascontiguousarray(im[..., ::-1]) for im in images[start:start + settings.batch]]  # BGR
        results = model.predict(chunk, imgsz=imgsz, conf=settings.conf, iou=settings.iou,
                                max_det=settings.max_det, device=device, verbose=False)
        for r in results:
            boxes = r.boxes
            out.append(Detections(boxes.xyxy.cpu().numpy().astype(np.float32),
                                  boxes.conf.cpu().numpy().astype(np.float32),
                                  boxes.cls.cpu().numpy().astype(np.int64)))
    return out
