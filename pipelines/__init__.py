"""One thin entry point per DVC stage (`python -m pipelines.<stage>`): settings in, library call, outputs out."""
