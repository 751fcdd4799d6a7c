"""The generative side: ADM-style UNet, noise-aware classifier, guided samplers, generation metrics."""
