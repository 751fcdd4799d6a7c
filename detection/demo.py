"""Procedural road-litter scenes with exact boxes: the built-in demo dataset (stage `demo_data`).

A scene is a close-up road patch: asphalt or concrete albedo with grain and blotches, sometimes
lane paint, a curb or cracks, then litter, then one lighting field (gradient and a cast shadow)
over everything. Each litter item is drawn analytically in its own frame (`u` along its long
axis, `v` across) at `SUPERSAMPLE` x the output size and area-downsampled, so edges are
antialiased and the item's coverage of every output pixel is known exactly. A box is the tight
box of the output pixels the item still covers after later items are drawn over it. Its COCO
`segmentation` outlines the supersampled pixels it still covers along their edges
(`detection.masks.outline_polygons`; output px, holes filled): rasterised at the supersampled size
the polygons give that coverage back exactly, and their extent rounded outwards is the box.
Placements that would leave an item mostly off-image or mostly hidden are redrawn, so every drawn
item is labelled. Same settings -> byte-identical PNGs and JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from core.io import write_json
from detection.masks import outline_polygons

GENERATOR_VERSION = "1.1"    # 1.1: COCO segmentation polygons
SUPERSAMPLE = 2              # items and road are drawn at this multiple of the output size
MIN_VISIBLE = 0.6            # share of an item that must stay inside the image and unoccluded
PLACEMENT_TRIES = 8

# paint(u, v) -> (cover bool[h,w], rgb float[h,w,3] in 0..255, alpha float[h,w] in 0..1)
Paint = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DemoSettings:
    """The `demo` section of params.yaml."""

    seed: int
    n_images: int                        # scenes rendered
    image_size: int                      # square side in px
    clean_fraction: float                # share of scenes with no litter (exact, rounded)
    max_objects: int                     # items per littered scene, drawn uniformly 1..max_objects
    class_frequency: dict[str, float]    # relative frequency per class (each needs a renderer in SPRITES)

    def __post_init__(self) -> None:
        for name, low in (("seed", 0), ("n_images", 1), ("image_size", 16), ("max_objects", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        if not isinstance(self.clean_fraction, (int, float)) or not 0 <= self.clean_fraction <= 1:
            raise ValueError(f"clean_fraction: must be a number in [0, 1], got {self.clean_fraction!r}")
        if not isinstance(self.class_frequency, dict) or not self.class_frequency:
            raise ValueError("class_frequency: must be a non-empty mapping of class name -> weight")
        for name, weight in self.class_frequency.items():
            if name not in SPRITES:
                raise ValueError(f"class_frequency: no renderer for class {name!r}; known: {', '.join(SPRITES)}")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
                raise ValueError(f"class_frequency.{name} must be a positive number, got {weight!r}")


@dataclass(frozen=True)
class LitterBox:
    category: str
    bbox: tuple[int, int, int, int]      # x, y, w, h in output px (tight, clipped to the image)
    area: float                          # visible output px (coverage-weighted)
    segmentation: tuple[tuple[float, ...], ...]  # COCO polygons of the visible part, output px


@dataclass(frozen=True)
class Scene:
    image: np.ndarray                    # uint8 [size, size, 3] RGB
    boxes: tuple[LitterBox, ...]


# ---- litter sprites: each picks its own size/colour from rng and returns (radius, paint) ----

def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float = 12) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _cylinder(t: np.ndarray, base: float, highlight_at: float, highlight_width: float) -> tuple:
    """Shade and specular of a cylinder seen side-on; t = v / half-width in [-1, 1]."""
    t = np.clip(t, -1, 1)
    shade = base + (1 - base) * np.sqrt(1 - t * t)
    spec = np.exp(-(((t - highlight_at) / highlight_width) ** 2))
    return shade[..., None], spec[..., None]


def _bottle(rng: np.random.Generator, side: float) -> tuple[float, Paint]:
    length = side * rng.uniform(0.30, 0.45)
    r = length * rng.uniform(0.13, 0.17)
    neck_r, neck, shoulder, cap = r * rng.uniform(0.38, 0.5), length * 0.25, length * 0.11, length * 0.075
    family = rng.integers(3)
    body = _jitter(rng, [(35, 120, 45), (200, 215, 215), (105, 55, 20)][family])
    opacity = 0.6 if family == 1 else 0.9
    cap_rgb = _jitter(rng, [(230, 230, 230), (200, 30, 30), (30, 60, 170), (30, 130, 40)][rng.integers(4)], 20)
    label = (rng.uniform(-0.3, -0.1) * length, rng.uniform(0.05, 0.2) * length) if rng.random() < 0.5 else None
    label_rgb = _jitter(rng, (220, 200, 60) if rng.random() < 0.5 else (230, 230, 225), 30)
    half = length / 2

    def paint(u: np.ndarray, v: np.ndarray):
        body_end = half - neck - shoulder
        width = np.where(u < body_end, r, np.maximum(neck_r, r - (r - neck_r) * (u - body_end) / shoulder))
        bottom = u - (-half + r * 0.5)            # rounded base
        width = np.where(bottom < 0, r - r * 0.5 + np.sqrt(np.clip((r * 0.5) ** 2 - bottom ** 2, 0, None)), width)
        is_cap = u > half - cap
        width = np.where(is_cap, neck_r * 1.2, width)
        cover = (np.abs(u) <= half) & (np.abs(v) <= width)
        shade, spec = _cylinder(v / width, 0.45, -0.45, 0.18)
        rgb = np.broadcast_to(body, u.shape + (3,)).copy()
        alpha = np.full(u.shape, opacity, np.float32)
        if label is not None:
            on_label = (u > label[0]) & (u < label[0] + label[1])
            rgb[on_label], alpha[on_label] = label_rgb, 1.0
        rgb[is_cap], alpha[is_cap] = cap_rgb, 1.0
        return cover, rgb * shade + 200 * spec, np.clip(alpha + 0.4 * spec[..., 0], 0, 1)

    return math.hypot(half, r), paint


def _can(rng: np.random.Generator, side: float) -> tuple[float, Paint]:
    length = side * rng.uniform(0.20, 0.27)
    r = length * rng.uniform(0.27, 0.32)
    family = rng.choice(4, p=[0.35, 0.3, 0.25, 0.1])     # red, silver, blue, gold
    body = _jitter(rng, [(200, 30, 35), (175, 180, 188), (30, 70, 185), (215, 170, 40)][family])
    crush = rng.uniform(0.2, 0.4) if rng.random() < 0.3 else 0.0
    rim = length * 0.09
    band = rng.random() < 0.5
    half = length / 2

    def paint(u: np.ndarray, v: np.ndarray):
        width = r * (1 - crush * np.exp(-((u / (0.22 * length)) ** 2)))
        cover = (np.abs(u) <= half) & (np.abs(v) <= width)
        shade, spec = _cylinder(v / width, 0.35, -0.35, 0.13)
        rgb = np.broadcast_to(body, u.shape + (3,)).copy()
        if band:
            rgb[np.abs(u) < length * 0.08] = (235, 235, 235)
        on_rim = np.abs(u) > half - rim
        rgb[on_rim] = (205, 205, 212)
        rgb[np.abs(np.abs(u) - (half - rim)) < 0.6] = (90, 90, 95)
        return cover, rgb * shade + 230 * spec, np.ones(u.shape, np.float32)

    return math.hypot(half, r), paint


def _polar_radius(rng: np.random.Generator, harmonics: range, amplitude: float) -> tuple[Callable, float]:
    """A wobbly outline radius(theta) around 1, and its upper bound."""
    amps = rng.uniform(0, amplitude, len(harmonics)) / np.sqrt(np.arange(1, len(harmonics) + 1))
    phases = rng.uniform(0, 2 * math.pi, len(harmonics))

    def radius(theta: np.ndarray) -> np.ndarray:
        return 1 + sum(a * np.cos(k * theta + p) for a, k, p in zip(amps, harmonics, phases))

    return radius, 1 + float(amps.sum())


def _folds(rng: np.random.Generator, n: int, scale: float) -> Callable:
    """A crumple field: sum of n random plane waves, in [-1, 1]."""
    dirs = rng.uniform(0, math.pi, n)
    freqs = rng.uniform(1.5, 4.0, n) / scale
    phases = rng.uniform(0, 2 * math.pi, n)
    return lambda u, v: sum(np.sin(f * (u * np.cos(d) + v * np.sin(d)) + p)
                            for d, f, p in zip(dirs, freqs, phases)) / n


def _plastic_bag(rng: np.random.Generator, side: float) -> tuple[float, Paint]:
    size = side * rng.uniform(0.17, 0.24)
    outline, bound = _polar_radius(rng, range(2, 7), 0.28)
    folds = _folds(rng, 4, size)
    color = _jitter(rng, [(238, 238, 235), (150, 195, 235), (60, 110, 200)][rng.choice(3, p=[.5, .25, .25])], 8)
    opacity = rng.uniform(0.72, 0.88)
    handles = rng.random() < 0.5

    def paint(u: np.ndarray, v: np.ndarray):
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        cover = rho <= size * outline(theta)
        if handles:
            for sign in (-1, 1):
                ring = np.hypot(u - size * 0.95, v - sign * size * 0.35)
                cover |= np.abs(ring - size * 0.28) < size * 0.07
        crease = folds(u, v)
        shade = 0.72 + 0.22 * np.tanh(3 * crease) + 0.25 * np.exp(-((crease / 0.08) ** 2))
        return cover, color * shade[..., None], np.full(u.shape, opacity, np.float32)

    return size * max(bound, 1.4), paint


def _star_polygon(rng: np.random.Generator, n: int, radii: tuple[float, float]) -> Callable:
    """A random polygon star-shaped around the origin: inside(u, v) -> (bool mask, sector index)."""
    angles = np.sort(2 * math.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n) - math.pi
    r = rng.uniform(*radii, n)
    verts_u, verts_v = r * np.cos(angles), r * np.sin(angles)

    def inside(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sector = np.searchsorted(angles, np.arctan2(v, u)) % n
        au, av, bu, bv = verts_u[sector - 1], verts_v[sector - 1], verts_u[sector], verts_v[sector]
        return (bu - au) * (v - av) - (bv - av) * (u - au) >= 0, sector

    return inside


def _paper(rng: np.random.Generator, side: float) -> tuple[float, Paint]:
    width = side * rng.uniform(0.22, 0.32)
    aspect = rng.uniform(0.55, 0.95)
    color = _jitter(rng, [(248, 248, 244), (242, 232, 200), (232, 238, 245)][rng.integers(3)], 6)
    crumpled = rng.random() < 0.5
    polygon = _star_polygon(rng, int(rng.integers(6, 10)), (0.35 * width, 0.55 * width))
    facet_shade = rng.uniform(0.75, 1.0, 10)
    printed = rng.random() < 0.5
    fold_at = width * rng.uniform(-0.3, 0.3)
    line_gap = rng.uniform(2.5, 4.0) * side / 128

    def paint(u: np.ndarray, v: np.ndarray):
        if crumpled:
            cover, sector = polygon(u, v / aspect)
            shade = facet_shade[sector]
        else:
            cover = (np.abs(u) <= width / 2) & (np.abs(v) <= aspect * width / 2)
            shade = np.where(u > fold_at, 0.88, 1.0)
        rgb = color * shade[..., None]
        if printed:
            text = (np.abs(u) < width * 0.33) & (np.abs(v) < aspect * width * 0.33) & ((v / line_gap) % 2 < 0.8)
            rgb[text] *= 0.6
        return cover, rgb, np.ones(u.shape, np.float32)

    return width * 0.72, paint


def _cigarette_butt(rng: np.random.Generator, side: float) -> tuple[float, Paint]:
    length = side * rng.uniform(0.10, 0.14)
    r = length * rng.uniform(0.13, 0.16)
    filter_end = -length / 2 + length * rng.uniform(0.55, 0.7)
    filter_rgb = _jitter(rng, (215, 130, 55), 15) if rng.random() < 0.8 else _jitter(rng, (235, 230, 215), 8)
    half = length / 2

    def paint(u: np.ndarray, v: np.ndarray):
        cover = (np.abs(u) <= half) & (np.abs(v) <= r)
        rgb = np.broadcast_to(np.float32([240, 238, 230]), u.shape + (3,)).copy()
        rgb[u < filter_end] = filter_rgb
        rgb[u > half - length * 0.1] = (80, 72, 65)
        shade, spec = _cylinder(v / r, 0.6, -0.4, 0.3)
        return cover, rgb * shade + 40 * spec, np.ones(u.shape, np.float32)

    return math.hypot(half, r), paint


SPRITES: dict[str, Callable[[np.random.Generator, float], tuple[float, Paint]]] = {
    "bottle": _bottle, "can": _can, "plastic_bag": _plastic_bag, "paper": _paper, "cigarette_butt": _cigarette_butt,
}


# ---- road surface ----

def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a cells x cells grid upsampled bicubically."""
    grid = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC)


def _road_albedo(rng: np.random.Generator, side: int) -> np.ndarray:
    """float32 [side, side, 3] in 0..255: asphalt or concrete with grain, paint, curb, cracks."""
    asphalt = rng.random() < 0.65
    base = rng.uniform(55, 95) if asphalt else rng.uniform(135, 180)
    tint = np.float32([1, 1, 1]) + rng.uniform(-0.04, 0.04, 3).astype(np.float32)
    grain = rng.normal(0, 9 if asphalt else 5, (side, side)).astype(np.float32)
    speck = rng.random((side, side))
    grain += np.where(speck < (0.05 if asphalt else 0.02), rng.uniform(20, 50), 0).astype(np.float32)
    grain -= np.where(speck > (0.97 if asphalt else 0.985), 25, 0).astype(np.float32)
    gray = base + grain + _smooth_noise(rng, side, 5) * (7 if asphalt else 10)
    img = gray[..., None] * tint
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    if asphalt and rng.random() < 0.4:
        _lane_paint(rng, img, xs, ys, side)
    if not asphalt and rng.random() < 0.5:
        _joint(rng, img, xs, ys, side)
    if rng.random() < 0.45:
        _cracks(rng, img, side)
    if rng.random() < 0.25:
        _curb(rng, img, xs, ys, side)
    return np.clip(img, 0, 255)


def _lane_paint(rng, img, xs, ys, side) -> None:
    angle = rng.uniform(-0.35, 0.35) + (math.pi / 2 if rng.random() < 0.5 else 0)
    offset = rng.uniform(0.15, 0.85) * side
    across = (xs - side / 2) * math.cos(angle) + (ys - side / 2) * math.sin(angle) + side / 2 - offset
    paint = np.abs(across) < side * rng.uniform(0.06, 0.12)
    worn = _smooth_noise(rng, side, 9) + rng.normal(0, 0.5, (side, side)) > rng.uniform(-1.2, -0.3)
    color = (225, 225, 215) if rng.random() < 0.7 else (225, 185, 50)
    mix = (paint & worn)[..., None] * 0.9
    img[:] = img * (1 - mix) + np.float32(color) * (np.clip(img, 1, None) / 120) ** 0.3 * mix


def _joint(rng, img, xs, ys, side) -> None:
    vertical = rng.random() < 0.5
    pos = rng.uniform(0.2, 0.8) * side
    dist = np.abs((xs if vertical else ys) - pos)
    img *= (1 - 0.5 * (dist < max(1.0, side * 0.012)))[..., None]


def _cracks(rng, img, side) -> None:
    mask = np.zeros((side, side), np.uint8)
    for _ in range(rng.integers(1, 3)):
        point, heading = rng.uniform(0, side, 2), rng.uniform(0, 2 * math.pi)
        points = [point.copy()]
        for _ in range(rng.integers(8, 16)):
            heading += rng.normal(0, 0.3)
            point = point + side * 0.06 * np.array([math.cos(heading), math.sin(heading)])
            points.append(point.copy())
        cv2.polylines(mask, [np.int32(points)], False, 1, max(1, round(rng.uniform(0.6, 1.6) * side / 128)))
    img *= (1 - 0.45 * mask)[..., None]


def _curb(rng, img, xs, ys, side) -> None:
    edge = rng.integers(4)
    depth = side * rng.uniform(0.12, 0.28)
    dist = [ys, side - ys, xs, side - xs][edge]
    stone = rng.uniform(165, 200) + rng.normal(0, 5, (side, side)).astype(np.float32)
    curb = dist < depth
    img[curb] = (stone[..., None] * np.float32([1.0, 0.98, 0.94]))[curb]
    img *= (1 - 0.6 * (np.abs(dist - depth) < side * 0.015))[..., None]


def _lighting(rng: np.random.Generator, side: int) -> np.ndarray:
    """float32 [side, side, 1]: a brightness gradient times, sometimes, a soft cast shadow."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(0.9, 1.1) + rng.uniform(0.1, 0.25) * (xs * math.cos(angle) + ys * math.sin(angle))
    if rng.random() < 0.3:
        edge = xs * math.cos(angle + 1.6) + ys * math.sin(angle + 1.6) + rng.uniform(-0.3, 0.3)
        edge += 0.06 * _smooth_noise(rng, side, 4)
        soft = 1 / (1 + np.exp(-edge * rng.uniform(25, 80)))
        light = light * (1 - rng.uniform(0.3, 0.45) * soft)
    return light[..., None].astype(np.float32)


# ---- scene composition ----

def _place(rng, paint: Paint, radius: float, side: int, top: np.ndarray, areas: list[int]):
    """Draw a pose; return (region, cover, rgb, alpha, full area) if every item stays visible enough, else None."""
    cx, cy = rng.uniform(0.1, 0.9, 2) * side
    angle = rng.uniform(0, 2 * math.pi)
    x0, y0 = math.floor(cx - radius), math.floor(cy - radius)
    x1, y1 = math.ceil(cx + radius) + 1, math.ceil(cy + radius) + 1
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    c, s = math.cos(angle), math.sin(angle)
    u, v = (xs - cx) * c + (ys - cy) * s, -(xs - cx) * s + (ys - cy) * c
    cover, rgb, alpha = paint(u, v)
    full = int(cover.sum())
    inside = (slice(max(y0, 0) - y0, min(y1, side) - y0), slice(max(x0, 0) - x0, min(x1, side) - x0))
    cover, rgb, alpha = cover[inside], rgb[inside], alpha[inside]
    if full == 0 or cover.sum() < MIN_VISIBLE * full:
        return None
    region = (slice(max(y0, 0), min(y1, side)), slice(max(x0, 0), min(x1, side)))
    hidden = np.bincount(top[region][cover] + 1, minlength=len(areas) + 1)[1:]
    visible = np.bincount(top.ravel() + 1, minlength=len(areas) + 1)[1:]
    if np.any(visible - hidden < MIN_VISIBLE * np.asarray(areas, np.int64)):
        return None
    return region, cover, rgb, alpha, full


def compose(albedo: np.ndarray, light: np.ndarray, classes: list[str], rng: np.random.Generator,
            size: int) -> Scene:
    """Draw `classes` in order over `albedo` [S,S,3] (S = SUPERSAMPLE * size), light, downsample."""
    side = albedo.shape[0]
    canvas, top, kept, areas = albedo.copy(), np.full((side, side), -1, np.int32), [], []
    for name in classes:
        for _ in range(PLACEMENT_TRIES):
            radius, paint = SPRITES[name](rng, side)
            placed = _place(rng, paint, radius, side, top, areas)
            if placed is not None:
                region, cover, rgb, alpha, full = placed
                mix = (alpha * cover)[..., None]
                canvas[region] = canvas[region] * (1 - mix) + rgb * mix
                top[region][cover] = len(kept)
                kept.append(name)
                areas.append(full)
                break
    image = cv2.resize(np.clip(canvas * light, 0, 255), (size, size), interpolation=cv2.INTER_AREA)
    boxes = []
    for index, name in enumerate(kept):
        coverage = (top == index).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
        rows, cols = np.nonzero(coverage.any(axis=1))[0], np.nonzero(coverage.any(axis=0))[0]
        bbox = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        polygons = tuple(tuple(p) for p in outline_polygons(top == index, SUPERSAMPLE))
        boxes.append(LitterBox(name, bbox, round(float(coverage.sum()), 2), polygons))
    return Scene(np.round(image).astype(np.uint8), tuple(boxes))


def render_scene(settings: DemoSettings, index: int, clean: bool) -> Scene:
    """Scene `index` of the dataset; its randomness depends only on (seed, index)."""
    rng = np.random.default_rng([settings.seed, index])
    names = list(settings.class_frequency)
    weights = np.asarray([settings.class_frequency[n] for n in names], np.float64)
    count = 0 if clean else int(rng.integers(1, settings.max_objects + 1))
    classes = [names[i] for i in rng.choice(len(names), size=count, p=weights / weights.sum())]
    side = settings.image_size * SUPERSAMPLE
    albedo, light = _road_albedo(rng, side), _lighting(rng, side)
    return compose(albedo, light, classes, rng, settings.image_size)


def clean_indices(settings: DemoSettings) -> set[int]:
    n_clean = round(settings.n_images * settings.clean_fraction)
    order = np.random.default_rng([settings.seed, 2**31]).permutation(settings.n_images)
    return set(order[:n_clean].tolist())


def write_demo(settings: DemoSettings, out: Path) -> dict:
    """Render every scene into `out`/images/*.png and write `out`/annotations.json (COCO)."""
    names = list(settings.class_frequency)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, counts = [], [], dict.fromkeys(names, 0)
    clean = clean_indices(settings)
    width = max(6, len(str(settings.n_images)))
    for index in range(settings.n_images):
        scene = render_scene(settings, index, index in clean)
        file_name = f"images/{index + 1:0{width}d}.png"
        cv2.imwrite(str(out / file_name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        images.append({"id": index + 1, "file_name": file_name,
                       "width": settings.image_size, "height": settings.image_size})
        for box in scene.boxes:
            counts[box.category] += 1
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": names.index(box.category) + 1, "bbox": list(box.bbox),
                                "area": box.area, "segmentation": [list(p) for p in box.segmentation],
                                "iscrowd": 0})
    n_clean = settings.n_images - len({a["image_id"] for a in annotations})
    info = {"description": "procedural road-litter demo scenes", "generator": "detection.demo",
            "version": GENERATOR_VERSION, "seed": settings.seed, "image_size": settings.image_size,
            "n_images": settings.n_images, "object_counts": counts, "clean_images": n_clean}
    categories = [{"id": i + 1, "name": n, "supercategory": "litter"} for i, n in enumerate(names)]
    write_json(out / "annotations.json", {"info": info, "licenses": [], "images": images,  # no indent: outlines
                                          "annotations": annotations, "categories": categories}, indent=None)
    return info
