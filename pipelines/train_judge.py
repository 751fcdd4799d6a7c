"""Stage train_judge: a clean-image (t = 0) litter classifier, independent of the guidance one.

Same model class and training code as train_classifier with noise disabled and its own seed,
trained only on real train + tagged images; scores generated images and serves as the feature
extractor (`features()`) for FD / KID / precision / recall. Writes models/judge/ and
reports/judge.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.stage import run_stage
from pipelines.train_classifier import run


def main(argv: list[str] | None = None) -> None:
    run("judge", Path("models/judge"), Path("reports/judge.json"), argv)


if __name__ == "__main__":
    sys.exit(run_stage(main))
