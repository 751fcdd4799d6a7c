"""Stage upsample: the guided images of `generate` at the detector's resolution.

Reads <paths.synthetic> (manifest.csv, images/ at the generative resolution), <paths.upsampler>
(method diffusion), <paths.judge> and the real `gen_metrics.real_split` images of
<paths.prepared> (the comparison's features); params `upsample` and `gen_metrics`. Writes
<paths.upsampled>/ (images/ at the prepared images' size + manifest.csv, the synthetic-image
contract of scenes.synthetic, which `pseudo_label` reads) and <paths.reports>/upsample.json
(upsampler vs bicubic resampling: FD / KID / precision / recall, edge energy).
"""

from __future__ import annotations

import sys

import torch

from augment import upsample
from augment.classifier import load_classifier
from augment.precision import resolved_settings
from augment.settings import GenMetricsSettings, UpsampleSettings
from augment.superres import Upsampler
from core.io import atomic_dir, write_json
from core.params import section
from pipelines.stage import run_stage, stage_args
from scenes.prepared import class_names, image_size, load_manifest
from scenes.synthetic import read_generated


def _main(argv: list[str] | None) -> None:
    _, params, paths = stage_args(__doc__, argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = resolved_settings(section(UpsampleSettings, "upsample", params), device, "upsample")
    metrics = section(GenMetricsSettings, "gen_metrics", params)
    upsampler = (Upsampler.load(paths.upsampler, device, settings.mixed_precision)
                 if settings.method == "diffusion" else None)
    generated = read_generated(paths.synthetic, class_names(paths.prepared))
    real = load_manifest(paths.prepared, (metrics.real_split,))
    with atomic_dir(paths.upsampled) as out_dir:
        report, ms = upsample.run(generated, list(real["abspath"]), settings, metrics, upsampler,
                              load_classifier(paths.judge, device), image_size(paths.prepared), out_dir)
    write_json(paths.reports / "upsample.json", report)
    summary = ", ".join(f"{method} FD {m['fd']} KID {m['kid_mean']} edges x{m['edge_energy_vs_real']} "
                        f"{ms[method]:.0f} ms/image" for method, m in report["methods"].items())
    print(f"upsample: {report['n_images']} images to {report['image_size']} px by {settings.method}; {summary}")


def main(argv: list[str] | None = None) -> int:
    return run_stage(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
