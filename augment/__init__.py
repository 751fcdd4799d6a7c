"""The generative side: ADM-style UNet, noise-aware classifier, guided samplers, generation metrics."""

import os

# albumentations asks PyPI for a newer version on import; this project never touches the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
