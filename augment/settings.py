"""The params sections of the generation stages (generate, sweep, gen_metrics), validated on construction.

They live apart from the code that uses them so that a stage needing only a setting (the sweep
plot needs `sweep.scales`) does not depend on the sampler code.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.params import check_at_least, check_choice
from scenes.prepared import SPLITS

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")  # every torch stage's setting; augment.precision decides `auto`
SAMPLER_NAMES = ("ddpm", "ddim", "dpmsolver++")  # augment.samplers.SAMPLERS
EXTRACTORS = ("judge", "inception")


def check_quota(quota: str | dict[str, int]) -> None:
    """A quota is "balance" or a mapping {class: count >= 0} (classes are checked against the data later)."""
    if isinstance(quota, str) and quota != "balance":
        raise ValueError(f"quota: '{quota}' is neither 'balance' nor a mapping {{class: count}}")
    if isinstance(quota, dict) and any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in quota.values()):
        raise ValueError(f"quota: counts must be integers >= 0, got {quota}")


@dataclass(frozen=True)
class GenerateSettings:
    """The `generate` section of params.yaml (augment.generate)."""

    sampler: str                     # ddpm | ddim | dpmsolver++
    steps: int                       # inference timesteps
    guidance_scale: float            # s in s * grad log p(y | x_t); tune per classifier
    eta: float                       # DDIM noise (0: deterministic); ddim only
    seed: int
    batch_size: int                  # images per forward pass (does not change the images)
    quota: str | dict[str, int]      # "balance" or {class: guided images}
    balance_factor: float            # balance: top each class up to factor x the commonest
    min_per_class: int               # balance: at least this many guided images per class
    control_per_class: int           # unguided controls per class (same seeds, scale 0)
    mixed_precision: str             # auto | no | bf16 | fp16: the UNet's forward (augment.precision)

    def __post_init__(self) -> None:
        check_choice(self, "sampler", SAMPLER_NAMES)
        check_choice(self, "mixed_precision", MIXED_PRECISION)
        if self.eta and self.sampler != "ddim":
            raise ValueError(f"eta: {self.eta} is only used by ddim; set it to 0 for {self.sampler}")
        check_at_least(self, 1, "steps", "batch_size")
        check_at_least(self, 0, "guidance_scale", "balance_factor", "min_per_class", "control_per_class")
        check_quota(self.quota)


@dataclass(frozen=True)
class SweepSettings:
    """The `sweep` section of params.yaml (augment.sweep)."""

    scales: tuple[float, ...]        # guidance scales s, one sweep point (DVC stage) each
    per_class: int                   # guided images per class and scale
    sampler: str                     # cheaper than the generate stage's on purpose
    steps: int

    def __post_init__(self) -> None:
        if not self.scales or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0
                                  for s in self.scales):
            raise ValueError(f"scales: {list(self.scales)} must be a non-empty list of numbers >= 0")
        if len({float(s) for s in self.scales}) != len(self.scales):
            raise ValueError(f"scales: {list(self.scales)} repeat a value")
        check_choice(self, "sampler", SAMPLER_NAMES)
        check_at_least(self, 1, "per_class", "steps")


@dataclass(frozen=True)
class GenMetricsSettings:
    """The `gen_metrics` section of params.yaml (augment.gen_metrics)."""

    extractor: str                   # judge | inception
    inception_weights: str | None    # inception: local InceptionV3 weights (.pth), never downloaded
    real_split: str                  # real reference images (data/prepared split)
    k: int                           # k-th nearest neighbour radius of precision/recall manifolds
    kid_subset_size: int             # KID subset size, capped at the smaller set's size
    kid_subsets: int                 # KID random subsets averaged
    batch_size: int                  # images per feature-extractor pass
    seed: int                        # KID subset draws

    def __post_init__(self) -> None:
        check_choice(self, "extractor", EXTRACTORS)
        check_choice(self, "real_split", SPLITS)
        check_at_least(self, 1, "k", "kid_subset_size", "kid_subsets", "batch_size")


UPSAMPLE_METHODS = ("diffusion", "bicubic")


@dataclass(frozen=True)
class UpsampleSettings:
    """The `upsample` section of params.yaml (augment.upsample)."""

    method: str                      # diffusion (the trained upsampler) | bicubic (plain resampling)
    steps: int                       # DDIM steps of the upsampler
    seed: int                        # image i draws its noise from a seed of (seed, image_id)
    batch_size: int                  # images per forward pass (does not change the images)
    mixed_precision: str             # auto | no | bf16 | fp16: the upsampler's forward (augment.precision)

    def __post_init__(self) -> None:
        check_choice(self, "method", UPSAMPLE_METHODS)
        check_choice(self, "mixed_precision", MIXED_PRECISION)
        check_at_least(self, 1, "steps", "batch_size")


@dataclass(frozen=True)
class InpaintSettings:
    """The `inpaint` section of params.yaml (augment.inpaint)."""

    steps: int                       # RePaint timesteps before resampling
    jump_length: int                 # resampling: steps down before each jump back up
    jump_n_sample: int               # resampling: passes over each jump (1 = none); ~this many x the UNet calls
    guidance_scale: float            # s of the patch classifier's guidance on the hole
    seed: int                        # object k of class c: seed hash(seed, c, k); image i: placement (seed, i)
    batch_size: int                  # windows per forward pass (does not change the images)
    quota: str | dict[str, int]      # "balance" or {class: objects}, as generate.quota
    balance_factor: float
    min_per_class: int
    objects_per_image: int           # objects planned per canvas (windows never overlap)
    hole_margin_px: int              # the hole is the planned box grown by this
    context_px: int                  # real pixels kept around the hole inside the window, at least
    change_threshold: float          # a hole pixel changed when a channel moved more than this (0-255 levels)
    min_box_px: int                  # a measured box thinner than this is undone
    placement_tries: int             # random places per object on one canvas
    canvas_tries: int                # canvases per image before its unplaced objects are given up
    control_per_class: int           # insertions per class also rendered unguided (same seeds, scale 0)
    grid_images: int                 # reports/inpaint/examples.png: insertions shown
    grid_scale: int
    mixed_precision: str             # auto | no | bf16 | fp16: the patch UNet's forward

    def __post_init__(self) -> None:
        check_choice(self, "mixed_precision", MIXED_PRECISION)
        check_at_least(self, 1, "steps", "jump_length", "jump_n_sample", "batch_size", "objects_per_image",
                       "min_box_px", "placement_tries", "canvas_tries", "grid_images", "grid_scale")
        check_at_least(self, 0, "guidance_scale", "balance_factor", "min_per_class", "hole_margin_px", "context_px",
                       "change_threshold", "control_per_class")
        check_quota(self.quota)
