# Two entry points for a fresh machine (see README): `make pipeline` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install pipeline test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch/torchvision first (pinned in constraints.txt): pip takes these builds from the machine's local wheel
# store, else from PyPI (CUDA builds on Linux x86_64). A CPU-only machine can take PyTorch's CPU builds instead:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
install: $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch torchvision
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'

# Stage commands call `python`: the venv's bin must come first on PATH.
pipeline: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_diffusion.py
	$(BIN)/python bench/bench_samplers.py --quick
	$(BIN)/python bench/bench_guidance.py --per-class 8
