"""Stage `generate`: classifier-guided synthetic litter images, rendered in shards, judged.

The plan (`plan_quota`, `plan_images`):

- guided images: `quota_c` per class c, each guided toward c with scale s. `quota` is either an
  explicit mapping {class: n} or "balance": with n_c = number of real `train` images tagged c,
      quota_c = max(ceil(balance_factor * max_c' n_c') - n_c, min_per_class)
  so every class is topped up toward balance_factor x the commonest class, and even the
  commonest gets `min_per_class` (with balance_factor 1 it needs 0 to balance).
- unguided controls: for each class, the first min(control_per_class, quota_c) guided images are
  rendered again with scale 0 and the SAME seeds, so "guided vs control" differs only by the
  guidance. They are kept apart from the training images (`control/`) and only feed the report.

Image k of class c has seed `image_seed(seed, c, k)`; all its noise comes from a generator with
that seed, so it depends on nothing else (other images, batch, number of processes). Batch j of
the plan (`plan_batches`) is rendered by process j % N (`render_shard`).

Hit rate: the judge (a clean-image classifier that did not guide) scores each image as saved
(uint8 PNG) at t = 0; a hit is judge p(target) >= 0.5. Guided vs control is a paired comparison
(same seed, guidance the only difference), tested with the exact one-sided McNemar test: among
the pairs where exactly one image is a hit, wins (guided hit, control miss) vs losses (the
reverse) ~ Binomial(wins + losses, 1/2) if guidance did nothing; p_value = P(X >= wins).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from PIL import Image
from safetensors import SafetensorError
from scipy.stats import binomtest
from torch import nn
from tqdm.auto import tqdm

from augment.classifier import load_classifier
from augment.data import to_model_range
from augment.guidance import classifier_guidance, prob_present
from augment.precision import sampling_precision
from augment.samplers import check_model_pair, sample
from augment.settings import GenerateSettings
from core.errors import StageError
from core.io import write_csv, write_json
from scenes.synthetic import HIT_THRESHOLD, MANIFEST_COLUMNS


@dataclass(frozen=True)
class ImageJob:
    index: int        # position in the plan (guided images first, then controls)
    image_id: str
    target: int       # class index guided toward (for a control: its guided twin's class)
    seed: int
    guided: bool


@dataclass(frozen=True)
class Rendered:
    job: ImageJob
    target_prob: float  # guidance classifier p(target | x_0, t = 0)
    judge_prob: float   # judge p(target | x_0)


@dataclass
class Models:
    unet: UNet2DModel
    scheduler: DDPMScheduler
    classifier: nn.Module
    judge: nn.Module


def plan_quota(settings: GenerateSettings, class_names: Sequence[str],
               train_tags: Iterable[Sequence[str]]) -> dict[str, int]:
    """Guided images per class: the explicit mapping, or the balance rule of the module docstring."""
    if isinstance(settings.quota, dict):
        unknown = sorted(set(settings.quota) - set(class_names))
        if unknown:
            raise StageError(f"params.yaml: generate.quota: unknown class(es) {', '.join(unknown)}; "
                             f"known: {', '.join(class_names)}")
        return {name: settings.quota.get(name, 0) for name in class_names}
    counts = {name: 0 for name in class_names}
    for tags in train_tags:
        for name in set(tags):
            counts[name] += 1
    goal = math.ceil(settings.balance_factor * max(counts.values(), default=0))
    return {name: max(goal - counts[name], settings.min_per_class) for name in class_names}


def image_seed(seed: int, class_name: str, k: int) -> int:
    """The seed of guided image k of a class (and of its control): a hash of (seed, class, k)."""
    state = np.random.SeedSequence([seed, zlib.crc32(class_name.encode()), k]).generate_state(1)
    return int(state[0])


def plan_images(quota: dict[str, int], class_names: Sequence[str], settings: GenerateSettings) -> list[ImageJob]:
    """Guided images class by class, then the controls; ids `<class>_<k>` and `control_<class>_<k>`."""
    guided, control = [], []
    for c, name in enumerate(class_names):
        for k in range(quota.get(name, 0)):
            seed = image_seed(settings.seed, name, k)
            guided.append((f"{name}_{k:05d}", c, seed, True))
            if k < settings.control_per_class:
                control.append((f"control_{name}_{k:05d}", c, seed, False))
    return [ImageJob(i, *fields) for i, fields in enumerate(guided + control)]


def load_models(unet_dir: Path, classifier_dir: Path, judge_dir: Path, class_names: Sequence[str],
                device: torch.device | str = "cpu", unet_stage: str = "train_unet", precision: str = "no") -> Models:
    """The trained UNet + scheduler, guidance classifier and judge, checked against each other;
    `unet_stage` is the stage that makes the UNet, for the error lines. The UNet samples at
    `precision` (augment.precision.sampling_precision); the guidance classifier stays fp32 (its
    gradient gains next to nothing in bf16, bench/RESULTS.md), and so does the judge, which measures."""
    device = torch.device(device)
    for path in (unet_dir / CONFIG_NAME, unet_dir / SAFETENSORS_WEIGHTS_NAME,
                 unet_dir / "scheduler" / "scheduler_config.json"):
        if not path.is_file():
            raise StageError(f"{path}: not found; run the {unet_stage} stage first")
    try:
        unet = UNet2DModel.from_pretrained(unet_dir).to(device).eval()
        scheduler = DDPMScheduler.from_pretrained(unet_dir / "scheduler")
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as err:
        raise StageError(f"{unet_dir}: unreadable UNet ({type(err).__name__}: {err}); rerun the {unet_stage} "
                         "stage".replace("\n", " ")) from None
    check_model_pair(unet, scheduler)
    models = Models(sampling_precision(unet, precision), scheduler, load_classifier(classifier_dir, device),
                    load_classifier(judge_dir, device))
    for path, model in ((classifier_dir, models.classifier), (judge_dir, models.judge)):
        if list(model.config.class_names) != list(class_names):
            raise StageError(f"{path}: class names {list(model.config.class_names)} differ from "
                             f"the prepared data's {list(class_names)}")
        if model.config.image_size != unet.config.sample_size:
            raise StageError(f"{path}: image size {model.config.image_size} differs from the UNet's "
                             f"{unet.config.sample_size}")
    return models


def plan_batches(jobs: Sequence[ImageJob], batch_size: int) -> list[list[ImageJob]]:
    """Consecutive plan entries in batches of `batch_size`, guided and control never mixed.

    Batches are cut from the whole plan, not per process, so each image is computed in the same
    batch whatever the number of processes: shards are bitwise identical to a one-process run
    (across batch sizes only up to float rounding, ~1e-5, as CPU kernels differ by batch size).
    """
    batches = []
    for guided in (True, False):
        group = [job for job in jobs if job.guided == guided]
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def render_shard(models: Models, settings: GenerateSettings, jobs: Sequence[ImageJob], images_dir: Path,
                 control_dir: Path, process_index: int = 0, num_processes: int = 1,
                 progress: bool = False) -> list[Rendered]:
    """Render and score this process's batches: batch j of `plan_batches` goes to process j % N.

    Guided PNGs go to `images_dir/<image_id>.png`, controls to `control_dir/images/`.
    """
    mine = plan_batches(jobs, settings.batch_size)[process_index::num_processes]
    cond_fn = classifier_guidance(models.classifier, settings.guidance_scale) if settings.guidance_scale else None
    for folder in (images_dir, control_dir / "images"):
        folder.mkdir(parents=True, exist_ok=True)
    rendered: list[Rendered] = []
    for batch in tqdm(mine, desc="generate", unit="batch", disable=not progress):
        out_dir = images_dir if batch[0].guided else control_dir / "images"
        rendered += render_batch(models, settings, batch, cond_fn if batch[0].guided else None, out_dir)
    return sorted(rendered, key=lambda r: r.job.index)


def render_batch(models: Models, settings: GenerateSettings, batch: Sequence[ImageJob], cond_fn,
                 out_dir: Path) -> list[Rendered]:
    """Sample one batch, save it as PNGs and score the saved pixels with both classifiers."""
    device = models.unet.device
    target = torch.tensor([job.target for job in batch], dtype=torch.long, device=device)  # [B]
    generators = [torch.Generator().manual_seed(job.seed) for job in batch]
    x = sample(settings.sampler, models.unet, models.scheduler, generators, steps=settings.steps,
               cond_fn=cond_fn, target=target, eta=settings.eta)  # [B, 3, H, W]
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # what the PNG holds
    saved = to_model_range(pixels)
    target_prob = prob_present(models.classifier, saved, target).tolist()
    judge_prob = prob_present(models.judge, saved, target).tolist()
    for job, image in zip(batch, pixels.permute(0, 2, 3, 1).cpu().numpy()):
        Image.fromarray(image).save(out_dir / f"{job.image_id}.png")
    return [Rendered(job, tp, jp) for job, tp, jp in zip(batch, target_prob, judge_prob)]


def manifest(rendered: Sequence[Rendered], settings: GenerateSettings, class_names: Sequence[str]) -> pd.DataFrame:
    """Manifest rows (MANIFEST_COLUMNS); `path` is relative to the manifest's folder."""
    rows = [{
        "image_id": r.job.image_id,
        "path": f"images/{r.job.image_id}.png",
        "target": class_names[r.job.target],
        "guidance_scale": settings.guidance_scale if r.job.guided else 0.0,
        "sampler": settings.sampler,
        "steps": settings.steps,
        "seed": r.job.seed,
        "target_prob": round(r.target_prob, 6),
        "judge_prob": round(r.judge_prob, 6),
    } for r in sorted(rendered, key=lambda r: r.job.index)]
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def _rates(items: Sequence[Rendered]) -> dict[str, float | int | None]:
    judge = np.array([r.judge_prob for r in items], dtype=float)
    target = np.array([r.target_prob for r in items], dtype=float)
    mean = lambda a: round(float(a.mean()), 4) if len(a) else None  # noqa: E731
    return {"n": len(items), "hit_rate": mean(judge >= HIT_THRESHOLD), "mean_judge_prob": mean(judge),
            "mean_target_prob": mean(target)}


def paired_test(pairs: Sequence[tuple[Rendered, Rendered]]) -> dict[str, float | int]:
    """Exact one-sided McNemar test of (guided, control) pairs: does guidance turn misses into hits?"""
    return mcnemar([(g.judge_prob >= HIT_THRESHOLD, c.judge_prob >= HIT_THRESHOLD) for g, c in pairs])


def mcnemar(hits: Sequence[tuple[bool, bool]]) -> dict[str, float | int]:
    """Exact one-sided McNemar test of paired (guided hit, control hit): wins ~ Binomial(wins + losses, 1/2)."""
    wins = sum(g and not c for g, c in hits)
    losses = sum(c and not g for g, c in hits)
    p_value = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    return {"wins": wins, "losses": losses, "p_value": round(float(p_value), 6)}


def report(rendered: Sequence[Rendered], settings: GenerateSettings, class_names: Sequence[str]) -> dict:
    """Per target class and overall: judge hit rate / mean probs of guided images and controls.

    `guided_paired` is the guided images whose seeds the controls reuse: the like-for-like
    comparison with `control`, tested in `paired_test` (module docstring).
    """
    controls = {(r.job.target, r.job.seed): r for r in rendered if not r.job.guided}

    def groups(keep) -> dict:
        kept = [r for r in rendered if keep(r)]
        pairs = [(r, controls[r.job.target, r.job.seed]) for r in kept
                 if r.job.guided and (r.job.target, r.job.seed) in controls]
        return {
            "guided": _rates([r for r in kept if r.job.guided]),
            "guided_paired": _rates([g for g, _ in pairs]),
            "control": _rates([r for r in kept if not r.job.guided]),
            "paired_test": paired_test(pairs),
        }

    per_class = {name: groups(lambda r, c=c: r.job.target == c) for c, name in enumerate(class_names)}
    return {
        "hit_threshold": HIT_THRESHOLD,
        "settings": settings,
        "overall": groups(lambda r: True),
        "per_class": per_class,
    }


def write_outputs(rendered: Sequence[Rendered], settings: GenerateSettings, quota: dict[str, int],
                  class_names: Sequence[str], images_dir: Path, control_dir: Path, manifest_csv: Path) -> dict:
    """The merged manifests + params.json beside the images; returns the report (`report` + quota)."""
    rendered = sorted(rendered, key=lambda r: r.job.index)
    for folder in (images_dir, control_dir):
        write_json(folder / "params.json", {"generate": settings, "quota": quota})
    write_csv(control_dir / "manifest.csv", manifest([r for r in rendered if not r.job.guided], settings, class_names))
    write_csv(manifest_csv, manifest([r for r in rendered if r.job.guided], settings, class_names))
    return {"quota": quota, **report(rendered, settings, class_names)}
