"""Generation quality: Frechet distance, KID, improved precision/recall and a judge IS-style score.

Synthetic images are compared with real held-out images (`gen_metrics.real_split`, default
`test`), overall and per target class c (synthetic images guided toward c vs real images tagged c),
in the feature space of one extractor (`gen_metrics.extractor`):

- `judge` (default, offline): the judge's pooled penultimate features (`NoisyLitterClassifier.features`
  at t = 0). The judge was trained on real images only and never guided the sampler.
- `inception`: InceptionV3 pool3 (2048-d) of torch-fidelity through torchmetrics, from a LOCAL
  weights file (`gen_metrics.inception_weights`); nothing is downloaded.

Metrics and papers (phi = features, r = real, g = generated):

- FD (Heusel et al. 2017, "GANs trained by a two time-scale update rule"):
      ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))      torchmetrics FrechetInceptionDistance
  Biased upward for small n (Binkowski et al. 2018): compare only figures with the same n.
- KID (Binkowski et al. 2018, "Demystifying MMD GANs"): unbiased MMD^2 with the cubic polynomial
  kernel, averaged over random subsets of size min(kid_subset_size, n_r, n_g)   torchmetrics KID
- improved precision / recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models"): the manifold of a set is the union of balls around each of its
  points with radius = distance to its k-th nearest neighbour in the set;
      precision = share of phi_g inside the real manifold, recall = share of phi_r inside the generated one.
- IS-style score (Salimans et al. 2016's exp(E_x KL(p(y|x) || p(y)))) with the judge as the
  classifier. The judge is multi-label (one sigmoid per class), so p(y|x) here is its sigmoid
  vector normalised to sum to 1 over classes: a distribution over "which litter the image shows".
  1 = every image gets the same class mix; n_classes = confident and evenly spread over classes.
- hit rate: share of generated images with judge p(target) >= 0.5 (as in `augment.generate`).

The extractor modules follow torchmetrics' custom-feature contract with `normalize=True`: float
images [B, 3, H, W] in [0, 1] -> features [B, D]; features are extracted once and fed to the
torchmetrics metrics through `FeatureInput`, because precision/recall reuse them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from augment.settings import GenMetricsSettings
from core.errors import StageError
from scenes.prepared import read_rgb
from scenes.synthetic import HIT_THRESHOLD

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
SMALL_N_NOTE = ("FD is biased upward at small n (a few hundred 32-px images or fewer): compare FD/KID/"
                "precision/recall only between figures with the same n_real and n_generated.")


class JudgeFeatures(nn.Module):
    """Judge features at t = 0: images [B, 3, H, W] in [0, 1] -> [B, D] (judge input is [-1, 1])."""

    def __init__(self, judge: nn.Module):
        super().__init__()
        self.judge = judge
        self.num_features = judge.head.in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        timesteps = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return self.judge.features(images.float() * 2 - 1, timesteps)


class InceptionFeatures(nn.Module):
    """InceptionV3 pool3 features of torch-fidelity from a local file: [B, 3, H, W] in [0, 1] -> [B, 2048]."""

    num_features = 2048

    def __init__(self, weights: Path | str | None):
        super().__init__()
        if not weights or not Path(weights).is_file():
            raise StageError(f"params.yaml: gen_metrics.inception_weights: '{weights}' is not a file; give the "
                             f"local {INCEPTION_FILE} (see README 'Generation metrics') or use extractor: judge")
        from torchmetrics.image import fid

        if not fid._TORCH_FIDELITY_AVAILABLE:
            raise StageError("gen_metrics.extractor: inception needs torch-fidelity: "
                             "`.venv/bin/pip install torch-fidelity` (or use extractor: judge)")
        self.inception = fid.NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                                feature_extractor_weights_path=str(weights))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception((images * 255).round().to(torch.uint8))  # it resizes to 299 itself


class FeatureInput(nn.Module):
    """Identity `feature` module: torchmetrics' update() then receives features [N, D] directly."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def build_extractor(settings: GenMetricsSettings, judge: nn.Module) -> nn.Module:
    extractor = JudgeFeatures(judge) if settings.extractor == "judge" else InceptionFeatures(settings.inception_weights)
    return extractor.eval()


def load_images(paths: Sequence[Path | str], size: int) -> torch.Tensor:
    """RGB images resampled to size x size (`scenes.prepared.resample_rgb`) -> float [N, 3, size, size] in [0, 1]."""
    arrays = [read_rgb(path, size) for path in paths]
    return as_unit_batch(arrays) if arrays else torch.zeros(0, 3, 1, 1)


def as_unit_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] images -> float [N, 3, H, W] in [0, 1], the extractors' input."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def extract(module: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """module(images) batch by batch -> float64 [N, D] (D = module.num_features)."""
    out = [module(images[i:i + batch_size]).double() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, module.num_features, dtype=torch.float64)


@torch.no_grad()
def judge_probs(judge: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Judge sigmoid p(class c present | x) at t = 0, [N, n_classes]."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size] * 2 - 1
        out.append(torch.sigmoid(judge(x, torch.zeros(len(x), dtype=torch.long)).double()))
    return torch.cat(out) if out else torch.zeros(0, len(judge.class_names), dtype=torch.float64)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FD between features real [N_r, D] and fake [N_g, D] (torchmetrics, covariances with n - 1)."""
    metric = FrechetInceptionDistance(feature=FeatureInput(real.shape[1]), normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, subset_size: int, subsets: int,
                              seed: int) -> tuple[float, float, int]:
    """KID mean and std over `subsets` draws of min(subset_size, N_r, N_g) features; also that size."""
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        torch.manual_seed(seed)
        metric = KernelInceptionDistance(feature=FeatureInput(real.shape[1]), subsets=subsets, subset_size=size)
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
        mean, std = metric.compute()
    return float(mean), float(std), size


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point [N, D] to its k-th nearest neighbour in the set (itself excluded), [N]."""
    return torch.cdist(features, features).kthvalue(k + 1, dim=1).values


def manifold_coverage(points: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` [N, D] inside some ball (centre manifold[j], radius radii[j])."""
    inside = torch.cdist(points, manifold) <= radii.unsqueeze(0)  # [N, M]
    return float(inside.any(dim=1).double().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Kynkaanniemi et al. 2019 improved precision and recall with k-NN manifolds."""
    precision = manifold_coverage(fake, real, knn_radii(real, k))
    recall = manifold_coverage(real, fake, knn_radii(fake, k))
    return precision, recall


def inception_style_score(probs: torch.Tensor, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))) with p(y|x) = probs [N, C] normalised over classes per row."""
    p_yx = probs.double().clamp_min(eps)
    p_yx = p_yx / p_yx.sum(dim=1, keepdim=True)
    p_y = p_yx.mean(dim=0, keepdim=True)
    kl = (p_yx * (p_yx.log() - p_y.log())).sum(dim=1)
    return float(kl.mean().exp())


def per_class_fd(real: list[list[np.ndarray]], fake: list[list[np.ndarray]], extractor: nn.Module,
                 batch_size: int) -> list[float | None]:
    """Per class, FD between the features of real and synthetic crops (None with fewer than 2 on a side)."""
    out = []
    for real_c, fake_c in zip(real, fake):
        if min(len(real_c), len(fake_c)) < 2:
            out.append(None)
            continue
        features = [extract(extractor, as_unit_batch(c), batch_size) for c in (real_c, fake_c)]
        out.append(round(frechet_distance(*features), 4))
    return out


@dataclass
class FeatureSet:
    """Images of one side of a comparison: extractor features [N, D], judge probs [N, C], labels."""

    features: torch.Tensor
    probs: torch.Tensor
    labels: list[tuple[str, ...]]  # real: tags; generated: (target,)

    def subset(self, keep: Sequence[bool]) -> FeatureSet:
        mask = torch.as_tensor(list(keep), dtype=torch.bool)
        return FeatureSet(self.features[mask], self.probs[mask], [label for label, m in zip(self.labels, keep) if m])


def distances(real: torch.Tensor, fake: torch.Tensor, settings: GenMetricsSettings) -> dict:
    """FD, KID and precision/recall between features real [N_r, D] and fake [N_g, D]; None where a set
    is too small for the figure."""
    n_real, n_fake = len(real), len(fake)
    out: dict = {"extractor": settings.extractor, "n_real": n_real, "n_generated": n_fake,
                 "fd": None, "kid_mean": None, "kid_std": None, "kid_subset_size": None,
                 "precision": None, "recall": None, "k": settings.k}
    if min(n_real, n_fake) >= 2:
        out["fd"] = round(frechet_distance(real, fake), 6)
        mean, std, size = kernel_inception_distance(real, fake, settings.kid_subset_size, settings.kid_subsets,
                                                    settings.seed)
        out.update(kid_mean=round(mean, 6), kid_std=round(std, 6), kid_subset_size=size)
    if min(n_real, n_fake) > settings.k:
        precision, recall = precision_recall(real, fake, settings.k)
        out.update(precision=round(precision, 4), recall=round(recall, 4))
    return out


def compare(real: FeatureSet, fake: FeatureSet, settings: GenMetricsSettings, class_names: Sequence[str]) -> dict:
    """FD, KID, precision/recall (extractor space) and judge IS-style score + hit rate of `fake`."""
    n_fake = len(fake.labels)
    out = distances(real.features, fake.features, settings)
    target = torch.tensor([class_names.index(label[0]) for label in fake.labels], dtype=torch.long)
    hits = fake.probs[torch.arange(n_fake), target] >= HIT_THRESHOLD
    out["judge_is"] = round(inception_style_score(fake.probs), 4) if n_fake else None
    out["judge_hit_rate"] = round(float(hits.double().mean()), 4) if n_fake else None
    return out


def compare_per_class(real: FeatureSet, fake: FeatureSet, settings: GenMetricsSettings,
                      class_names: Sequence[str]) -> dict:
    """`compare` overall and per class c: generated with target c vs real images tagged c."""
    per_class = {name: compare(real.subset([name in tags for tags in real.labels]),
                               fake.subset([label[0] == name for label in fake.labels]), settings, class_names)
                 for name in class_names}
    return {"overall": compare(real, fake, settings, class_names), "per_class": per_class}


def feature_set(paths: Sequence[str], labels: list[tuple[str, ...]], extractor: nn.Module, judge: nn.Module,
              batch_size: int) -> FeatureSet:
    images = load_images(paths, judge.config.image_size)  # real images at the detector's size are downsampled
    return FeatureSet(extract(extractor, images, batch_size), judge_probs(judge, images, batch_size), labels)


def measure_generated(settings: GenMetricsSettings, judge: nn.Module, real: pd.DataFrame,
                      generated: dict[str, pd.DataFrame], class_names: Sequence[str]) -> dict:
    """The report: real images (`abspath`, `tags`) vs each generated set (`abspath`, `target`)."""
    if list(judge.class_names) != list(class_names):
        raise StageError(f"the judge's class names {judge.class_names} differ from the prepared data's {list(class_names)}")
    if real.empty:
        raise StageError(f"params.yaml: gen_metrics.real_split: the prepared split '{settings.real_split}' has no "
                         "images to compare with")
    extractor = build_extractor(settings, judge)
    real_set = feature_set(list(real["abspath"]), list(real["tags"]), extractor, judge, settings.batch_size)
    report = {"extractor": settings.extractor, "feature_dim": extractor.num_features,
              "real_split": settings.real_split, "n_real": len(real_set.labels),
              "real_judge_is": round(inception_style_score(real_set.probs), 4) if len(real_set.labels) else None,
              "note": SMALL_N_NOTE, "settings": settings, "sets": {}}
    for name, frame in generated.items():
        fake = feature_set(list(frame["abspath"]), [(t,) for t in frame["target"]], extractor, judge,
                         settings.batch_size)
        report["sets"][name] = compare_per_class(real_set, fake, settings, class_names)
    return report
