"""What several test modules build on: tiny settings, a tiny prepared dataset, tiny models, fake stage outputs.

Settings start from the repository's own params.yaml (the only source of settings) with tiny
overrides, so a test never depends on defaults hidden in code.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
import yaml
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image
from torch import nn

from augment.classifier import NoisyLitterClassifier
from augment.settings import GenerateSettings, GenMetricsSettings, InpaintSettings, SweepSettings, UpsampleSettings
from augment.superres import PatchesWithLowRes, Upsampler, UpsamplerTrainConfig
from augment.train_classifier import ClassifierTrainConfig, PatchClassifierTrainConfig
from augment.train_unet import PatchUNetTrainConfig, UNetTrainConfig
from augment.unet import ArchConfig, ScheduleConfig, build_scheduler
from core.params import deep_merge, from_dict
from detection.copypaste import CopyPasteSettings
from detection.demo import DemoSettings
from detection.evaluate import EvaluateSettings
from detection.prepare import DatasetParams
from detection.pseudo_label import PseudoLabelSettings
from detection.realism import QualityGateSettings
from detection.splits import SplitParams
from detection.yolo import YoloParams
from pipelines.stage import Launch, Paths
from scenes.canvases import canvases

REPO = Path(__file__).resolve().parents[1]
# The documented package order (README, "Layout"), bottom first: a package imports only packages of
# a lower layer; the two sides of one layer never import each other.
LAYERS = (("core",), ("scenes",), ("augment", "detection"), ("pipelines",))
PACKAGES = tuple(package for layer in LAYERS for package in layer)


def module_file(name: str) -> Path | None:
    """The file of project module `name` (dotted), or None."""
    path = REPO.joinpath(*name.split("."))
    return next((c for c in (path.with_suffix(".py"), path / "__init__.py") if c.is_file()), None)
T = TypeVar("T")

def load_bench(name: str) -> ModuleType:
    """bench/<name>.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- settings

# Every params.yaml section and the dataclass its stage reads it into.
SECTIONS = {"paths": Paths, "launch": Launch, "demo": DemoSettings, "dataset": DatasetParams, "split": SplitParams,
            "yolo": YoloParams, "generate": GenerateSettings, "gen_metrics": GenMetricsSettings,
            "sweep": SweepSettings, "pseudo_label": PseudoLabelSettings, "evaluate": EvaluateSettings,
            "copypaste": CopyPasteSettings, "unet": UNetTrainConfig, "classifier": ClassifierTrainConfig,
            "judge": ClassifierTrainConfig, "upsampler": UpsamplerTrainConfig, "upsample": UpsampleSettings,
            "patch_unet": PatchUNetTrainConfig, "patch_classifier": PatchClassifierTrainConfig,
            "patch_judge": PatchClassifierTrainConfig, "inpaint": InpaintSettings,
            "quality_gate": QualityGateSettings}

TINY_NET = {"block_out_channels": [16, 32], "attention_resolutions": [8], "attention_head_dim": 16,
            "norm_num_groups": 8}
TINY_CROPS = {"px": 16, "small_px": None, "count": 64}
# Every stage runs for real on 16-px images with these, in about a minute on 2 CPU cores. fp32 in
# every torch stage (FP32): the results must not depend on whether the test machine has bf16.
FP32 = {"mixed_precision": "no"}
TINY = {
    "demo": {"n_images": 48, "image_size": 32},
    "dataset": {"image_size": 32},
    "split": {"train": 0.4, "tagged": 0.2, "val": 0.2, "test": 0.2},
    "unet": {**FP32, "image_size": 16, "model": TINY_NET, "batch_size": 8, "max_steps": 4, "warmup_steps": 1,
             "checkpoint_every": 2, "log_every": 1, "n_samples": 4, "sample_steps": 4},
    "classifier": {**FP32, "image_size": 16, "model": TINY_NET, "batch_size": 8, "max_steps": 4},
    "judge": {**FP32, "image_size": 16, "model": TINY_NET, "batch_size": 8, "max_steps": 4},
    "upsampler": {**FP32, "image_size": 32, "low_res": 16, "patch_size": 16,
                  "model": {**TINY_NET, "attention_resolutions": []}, "batch_size": 8, "max_steps": 4, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1,
                  "n_samples": 2, "sample_steps": 2},
    "upsample": {**FP32, "steps": 2, "batch_size": 4},
    "patch_unet": {**FP32, "image_size": 16, "model": TINY_NET, "batch_size": 8, "max_steps": 4, "warmup_steps": 1,
                   "checkpoint_every": 2, "log_every": 1, "n_samples": 4, "sample_steps": 4, "crops": TINY_CROPS},
    "patch_classifier": {**FP32, "image_size": 16, "model": TINY_NET, "batch_size": 8, "max_steps": 4,
                         "crops": TINY_CROPS},
    "patch_judge": {**FP32, "image_size": 16, "model": TINY_NET, "batch_size": 8, "max_steps": 4, "crops": TINY_CROPS},
    "inpaint": {**FP32, "steps": 4, "jump_length": 2, "jump_n_sample": 2, "batch_size": 4, "min_per_class": 2,
                "control_per_class": 1, "hole_margin_px": 1, "context_px": 2, "change_threshold": 8.0,
                "min_box_px": 1, "grid_images": 2},
    # the budget searched as the demo's is, in 2 epochs: every gain is below min_gain 1.0
    "yolo": {"train": {"imgsz": 32, "batch": 8, "device": "cpu", "amp": False, "extra": {"mosaic": 0.0}},
             "budget": {"epochs": None, "val_every": 1, "window": 1, "min_gain": 1.0, "min_epochs": 2, "max_epochs": 3},
             "seeds": [0, 1]},
    "generate": {**FP32, "steps": 4, "balance_factor": 0.0, "min_per_class": 2, "control_per_class": 1, "batch_size": 8},
    "sweep": {"scales": [0, 3], "per_class": 1, "steps": 4},
    "pseudo_label": {"predict": {"conf": 0.001, "device": "cpu", "batch": 8}},
    "evaluate": {"predict": {"device": "cpu", "batch": 8}, "bootstrap": {"n_resamples": 50}, "grid_images": 4,
                 "grid_scale": 3},
    # a 2-epoch baseline finds almost nothing: a gate at 0 keeps every class, so the variants still add images
    "quality_gate": {"min_agreement": 0.0},
}
# A large scale: the tiny random classifier's gradients are weak, and the stage must show their effect.
TINY_GENERATE = {"sampler": "ddim", "steps": 2, "guidance_scale": 1000.0, "eta": 0.0, "seed": 3, "batch_size": 2,
                 "quota": "balance", "balance_factor": 1.0, "min_per_class": 1, "control_per_class": 1, **FP32}
TINY_METRICS = {"k": 1, "kid_subsets": 10, "batch_size": 4}
# The detection stages on tiny_prepared: keep every box the one-epoch baseline finds, draw everything.
TINY_DETECTION = {
    "pseudo_label": {"predict": {"conf": 0.0001}, "require_target": False, "max_background_fraction": 0.5},
    "evaluate": {"bootstrap": {"n_resamples": 20}, "draw_conf": 0.0},
}


def repo_params() -> dict[str, Any]:
    """The repository's params.yaml."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params(**sections: dict) -> dict[str, Any]:
    """params.yaml with TINY and then `sections` merged in (a section's dict merges key by key)."""
    return deep_merge(deep_merge(repo_params(), TINY), sections)


def write_params(root: Path, **sections: dict) -> dict[str, Any]:
    params = tiny_params(**sections)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def settings(cls: type[T], name: str, **overrides: Any) -> T:
    """Section `name` of the tiny params with `overrides` merged in, as `cls`."""
    return from_dict(cls, deep_merge(tiny_params()[name], overrides), where=f"params.yaml: {name}")


def tiny_arch(**overrides: Any) -> ArchConfig:
    """TINY_NET with `overrides` (16 and 32 channels, attention at 8 px, 8 groups)."""
    return from_dict(ArchConfig, {**tiny_params()["unet"]["model"], **overrides}, where="tiny arch")


def adm_schedule(**overrides: Any) -> ScheduleConfig:
    """ADM's own schedule with `overrides`: cosine, 1000 steps, eps prediction, fixed variance."""
    values = {"noise_schedule": "cosine", "num_train_timesteps": 1000, "learn_sigma": False,
              "prediction_type": "epsilon", **overrides}
    return from_dict(ScheduleConfig, values, where="adm schedule")


# ---- a tiny prepared dataset (the `import` contract)

TINY_CLASSES = ["bottle", "can", "paper"]
TINY_COLOURS = [(230, 40, 40), (40, 60, 230), (240, 240, 60)]
TINY_SIZE = 16
TINY_SPLITS = {"train": 8, "tagged": 8, "val": 6, "test": 6}
TINY_PATTERNS = [[0], [1], [2], [0, 1], [], [1, 2]]


def write_tiny_prepared(root: Path, seed: int = 0) -> Path:
    """`root/data/prepared`: data.yaml, manifest.csv, images/{split}/*.png, labels/{train,val,test}/*.txt.

    Each image is a grey road with a light lane line and one coloured 5x5 blob per tagged class
    (class c has colour TINY_COLOURS[c]); every split holds all tag patterns.
    """
    prepared = root / "data" / "prepared"
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in TINY_SPLITS.items():
        (prepared / "images" / split).mkdir(parents=True, exist_ok=True)
        (prepared / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image_id, classes = f"{split}_{i:03d}", TINY_PATTERNS[i % len(TINY_PATTERNS)]
            image = np.full((TINY_SIZE, TINY_SIZE, 3), 100, np.uint8) + rng.integers(0, 12, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
            image[:, 7:9] = 200  # lane line
            boxes = []
            for c in classes:
                x0, y0 = rng.integers(0, TINY_SIZE - 5, size=2)
                image[y0:y0 + 5, x0:x0 + 5] = TINY_COLOURS[c]
                boxes.append(f"{c} {(x0 + 2.5) / TINY_SIZE} {(y0 + 2.5) / TINY_SIZE} {5 / TINY_SIZE} {5 / TINY_SIZE}\n")
            Image.fromarray(image).save(prepared / "images" / split / f"{image_id}.png")
            if split != "tagged":
                (prepared / "labels" / split / f"{image_id}.txt").write_text("".join(boxes))
            rows.append({"image_id": image_id, "split": split, "path": f"images/{split}/{image_id}.png",
                         "width": TINY_SIZE, "height": TINY_SIZE, "source": "fixture",
                         "tags": ";".join(TINY_CLASSES[c] for c in sorted(set(classes))), "n_boxes": len(classes)})
    pd.DataFrame(rows).to_csv(prepared / "manifest.csv", index=False)
    data = {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test",
            "names": dict(enumerate(TINY_CLASSES)), "image_size": TINY_SIZE}
    (prepared / "data.yaml").write_text(yaml.safe_dump(data))
    return prepared


def move_tagged_to_unlabelled(root, count):
    """The first `count` `tagged` images of root's prepared data become `unlabelled` (tags unknown)."""
    prepared = root / "data" / "prepared"
    frame = pd.read_csv(prepared / "manifest.csv", keep_default_na=False, dtype={"tags": str})
    moved = frame.index[frame["split"] == "tagged"][:count]
    (prepared / "images" / "unlabelled").mkdir(exist_ok=True)
    for i in moved:
        target = f"images/unlabelled/{frame.loc[i, 'image_id']}.png"
        (prepared / frame.loc[i, "path"]).rename(prepared / target)
        frame.loc[i, ["split", "path", "tags"]] = ["unlabelled", target, ""]
    frame.to_csv(prepared / "manifest.csv", index=False)


def make_synthetic(root: Path, n: int = 6, seed: int = 1, size: int = TINY_SIZE) -> Path:
    """`root/data/synthetic` as `generate` writes it: size x size images/*.png + manifest.csv, targets cycling."""
    synthetic = root / "data" / "synthetic"
    (synthetic / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        target = i % len(TINY_CLASSES)
        image = np.full((size, size, 3), 100, np.uint8) + rng.integers(0, 12, (size, size, 3), dtype=np.uint8)
        image[size * 5 // 16:size * 10 // 16, size * 5 // 16:size * 10 // 16] = TINY_COLOURS[target]
        Image.fromarray(image).save(synthetic / "images" / f"syn{i:03d}.png")
        rows.append({"image_id": f"syn{i:03d}", "path": f"images/syn{i:03d}.png", "target": TINY_CLASSES[target],
                     "guidance_scale": 1.0, "sampler": "ddim", "steps": 10, "seed": i,
                     "target_prob": 0.9, "judge_prob": 0.8})
    pd.DataFrame(rows).to_csv(synthetic / "manifest.csv", index=False)
    return synthetic


# ---- source datasets in the formats `import` reads

W, H = 20, 16  # every source fixture image; non-square so x / y mix-ups show


def make_image(path: Path, size: tuple[int, int] = (W, H)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def roboflow_yolo(root: Path, splits=("train", "valid", "test")) -> Path:
    for folder in splits:
        make_image(root / folder / "images" / f"{folder}1.jpg")
        write(root / folder / "labels" / f"{folder}1.txt", "0 0.5 0.5 0.5 0.5\n")
    write(root / "data.yaml", "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
                              "nc: 2\nnames: ['bottle', 'can']\n")
    return root


def voc_xml(filename: str, objects: str, size: str = f"<size><width>{W}</width><height>{H}</height></size>") -> str:
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
            f"<path>/home/x/{filename}</path>{size}{objects}</annotation>")


def voc_object(name: str, xmin="1", ymin="2", xmax="10", ymax="12", difficult="0") -> str:
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def voc_devkit(root: Path) -> Path:
    for stem, objects in [("001", voc_object("can") + voc_object("bottle", "5", "5", "5", "6", difficult="1")),
                          ("002", voc_object("bottle")), ("003", "")]:
        make_image(root / "JPEGImages" / f"{stem}.jpg")
        write(root / "Annotations" / f"{stem}.xml", voc_xml(f"{stem}.jpg", objects))
    write(root / "ImageSets" / "Main" / "train.txt", "001\n")
    write(root / "ImageSets" / "Main" / "val.txt", "002\n")
    write(root / "ImageSets" / "Main" / "trainval.txt", "001\n002\n")
    return root


# ---- tiny models

class LinearClassifier(nn.Module):
    """logits = W x + b (timestep ignored): grad_x logsigmoid(logit_y) = sigmoid(-logit_y) w_y exactly."""

    def __init__(self, n_classes: int, shape: tuple[int, int, int], seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        dim = shape[0] * shape[1] * shape[2]
        self.weight = nn.Parameter(torch.randn(n_classes, dim, generator=gen) / dim**0.5)
        self.bias = nn.Parameter(torch.randn(n_classes, generator=gen))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        assert timesteps.shape == (x.shape[0],) and timesteps.dtype == torch.long
        return x.flatten(1) @ self.weight.T + self.bias

    def closed_form_grad(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = self.weight[target]  # [B, D]
        logit = (x.flatten(1) * w).sum(1) + self.bias[target]
        return (torch.sigmoid(-logit)[:, None] * w).reshape(x.shape).detach()


def tiny_noisy_classifier(class_names=("c0", "c1", "c2"), size: int = 16, seed: int = 0,
                          pool: str = "attention") -> NoisyLitterClassifier:
    torch.manual_seed(seed)
    arch = tiny_arch(block_out_channels=[16, 16], attention_resolutions=[], attention_head_dim=8)
    return NoisyLitterClassifier.from_arch(class_names, size, 1000, arch, pool, where="test").eval()


# The tiny upsampler brings 4-px images to the tiny prepared 16 px (factor 4), trained on 8-px crops.
TINY_UPSAMPLER = {"image_size": TINY_SIZE, "low_res": 4, "patch_size": 8, "target": "image", "residual_scale": 1.0,
                  "schedule": {"noise_schedule": "linear", "prediction_type": "epsilon"}, "snr_gamma": None,
                  "batch_size": 4, "mixed_precision": "no"}


def tiny_upsampler(**overrides: Any) -> Upsampler:
    """An untrained tiny upsampler (TINY_UPSAMPLER with `overrides`), as training would hand it over."""
    cfg = settings(UpsamplerTrainConfig, "upsampler", **{**TINY_UPSAMPLER, **overrides})
    torch.manual_seed(0)
    return Upsampler.trained(PatchesWithLowRes(cfg).build(cfg, TINY_SIZE).eval(), build_scheduler(cfg.schedule), cfg)


def tiny_unet(out_channels: int = 3, seed: int = 0, size: int = 16) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=out_channels, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()


def trained_scheduler(variance_type: str = "fixed_small", clip_sample: bool = True) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         variance_type=variance_type, clip_sample=clip_sample)


def write_tiny_models(root: Path, judge_names=TINY_CLASSES) -> None:
    """`root/models/{unet,classifier,judge}` as the training stages write them, tiny and untrained."""
    unet_dir = root / "models" / "unet"
    tiny_unet().save_pretrained(unet_dir)
    trained_scheduler().save_pretrained(unet_dir / "scheduler")
    tiny_noisy_classifier(TINY_CLASSES, TINY_SIZE, seed=1).save_pretrained(root / "models" / "classifier")
    tiny_noisy_classifier(judge_names, TINY_SIZE, seed=2).save_pretrained(root / "models" / "judge")


def write_tiny_patch_models(root: Path, size: int = 4) -> None:
    """`root/models/patch_{unet,classifier,judge}` as the patch trainings write them, tiny (size px) and untrained."""
    models = root / "models"
    tiny_unet(size=size).save_pretrained(models / "patch_unet")
    trained_scheduler().save_pretrained(models / "patch_unet" / "scheduler")
    tiny_noisy_classifier(TINY_CLASSES, size, seed=1).save_pretrained(models / "patch_classifier")
    tiny_noisy_classifier(TINY_CLASSES, size, seed=2).save_pretrained(models / "patch_judge")


# ---- a hand-built evaluation (no YOLO): every seed of a variant finds whole classes exactly

HAND_NAMES = ["bottle", "can", "paper"]  # paper: no ground truth anywhere (NaN semantics)


def hand_evaluation(found: dict[str, list[list[int]]], n_images: int = 3, n_resamples: int = 200):
    """`detection.evaluate.Evaluation` of `n_images` 16-px images, each with one bottle and one can;
    `found[variant][k]` lists the classes seed k of the variant detects, exactly (conf 0.9, 0.8).
    The first variant is the reference."""
    from detection.evaluate import Evaluation, TestImage
    from detection.metrics import BootstrapSettings, bootstrap_deltas, match_image, summarize
    from scenes.boxes import Detections

    rng = np.random.default_rng(0)
    gt_xyxy, gt_cls = np.array([[2, 2, 8, 8], [9, 9, 14, 14]], np.float32), np.array([0, 1])
    images = [TestImage(f"t{i}", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), gt_xyxy, gt_cls)
              for i in range(n_images)]
    both = Detections(gt_xyxy, np.array([0.9, 0.8], np.float32), gt_cls)
    seeds = tuple(range(len(next(iter(found.values())))))
    detections = {v: [[both.select(np.isin(gt_cls, classes))] * n_images for classes in per_seed]
                  for v, per_seed in found.items()}
    matches = {v: [[match_image(d, im.gt_xyxy, im.gt_cls) for d, im in zip(seed, images)] for seed in per_seed]
               for v, per_seed in detections.items()}
    n = len(HAND_NAMES)
    deltas = bootstrap_deltas(matches, n, BootstrapSettings(n_resamples, 0, 0.95))
    return Evaluation(HAND_NAMES, seeds, images, {v: d[0] for v, d in detections.items()},
                      {v: [summarize(m, n) for m in per_seed] for v, per_seed in matches.items()},
                      {v: summarize([m for seed in per_seed for m in seed], n) for v, per_seed in matches.items()},
                      deltas)


# ---- copy-paste fixtures: instance maps on the tiny prepared data, a pseudo-labelled layout

def write_tiny_masks(prepared: Path, every: int = 2) -> list[str]:
    """Instance maps (`scenes.prepared`) for every `every`-th `train` image of write_tiny_prepared:
    each 5x5 blob without its four corners (value k for label line k). Returns the image ids given one."""
    ids = []
    for i, label in enumerate(sorted((prepared / "labels" / "train").glob("*.txt"))):
        lines = np.loadtxt(label, ndmin=2) if label.read_text().strip() else np.zeros((0, 5))
        if i % every or not len(lines):
            continue
        instances = np.zeros((TINY_SIZE, TINY_SIZE), np.uint8)
        for k, (_, cx, cy, _, _) in enumerate(lines, start=1):
            x0, y0 = round(cx * TINY_SIZE - 2.5), round(cy * TINY_SIZE - 2.5)
            blob = np.ones((5, 5), bool)
            blob[[0, 0, 4, 4], [0, 4, 0, 4]] = False
            instances[y0:y0 + 5, x0:x0 + 5][blob] = k
        (prepared / "masks" / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(instances).save(prepared / "masks" / "train" / f"{label.stem}.png")
        ids.append(label.stem)
    return ids


def write_pseudo_layout(root: Path, name: str, classes: list[list[int]], seed: int = 2) -> Path:
    """`root/data/pseudo/<name>` as pseudo_label writes it: image i holds one 4x4 box per class in classes[i]."""
    out = root / "data" / "pseudo" / name
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, image_classes in enumerate(classes):
        image_id = f"p{i:03d}"
        Image.fromarray(rng.integers(0, 255, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)).save(out / "images" / f"{image_id}.png")
        lines = "".join(f"{c} {rng.uniform(0.2, 0.8):.4f} {rng.uniform(0.2, 0.8):.4f} 0.25 0.25\n" for c in image_classes)
        (out / "labels" / f"{image_id}.txt").write_text(lines)
        rows.append({"image_id": image_id, "path": f"images/{image_id}.png", "source_path": "x", "group": "g",
                     "n_boxes": len(image_classes), "classes": ";".join(TINY_CLASSES[c] for c in sorted(set(image_classes)))})
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out


def write_inpaint_layout(root: Path, inserted: list[list[int]], seed: int = 3) -> Path:
    """`root/data/pseudo/inpaint` as stage inpaint writes it, on write_tiny_prepared's canvases: image i
    is canvas i (the train and clean tagged images in turn) with one 4x4 box per class of inserted[i]
    after the canvas's label lines, and its source_path relative to `root`."""
    out = root / "data" / "pseudo" / "inpaint"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    pool = canvases(root / "data" / "prepared")
    rng = np.random.default_rng(seed)
    rows = []
    for i, classes in enumerate(inserted):
        canvas, image_id = pool[i % len(pool)], f"{i:06d}"
        Image.fromarray(canvas.rgb).save(out / "images" / f"{image_id}.png")
        lines = "".join(f"{c} {rng.uniform(0.2, 0.8):.4f} {rng.uniform(0.2, 0.8):.4f} 0.25 0.25\n" for c in classes)
        (out / "labels" / f"{image_id}.txt").write_text(canvas.label_text + lines)
        rows.append({"image_id": image_id, "path": f"images/{image_id}.png",
                     "source_path": os.path.relpath(canvas.path, root), "group": canvas.kind,
                     "n_boxes": len(canvas.cls) + len(classes), "classes": "", "n_inserted": len(classes),
                     "n_undone": 0, "inserted": ""})
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    return out
