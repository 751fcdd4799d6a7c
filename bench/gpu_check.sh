#!/usr/bin/env bash
# Every stage of the pipeline once on this machine's GPU, without DVC, in about 6 minutes on an
# H100 / H200-class GPU (params.yaml + pipelines/profiles one_gpu + gpu_check). Nothing here waits
# on the network: no pip, no downloads, no update checks. Figures land in OUT as each stage ends.
#   bench/gpu_check.sh OUT [--profiles NAME ...] [--set section.key=value ...] [--params FILE]
# Run it from an environment that has the project installed (PYTHON=... to pick the interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
export YOLO_OFFLINE=true NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
       DVC_NO_ANALYTICS=1 PIP_NO_INDEX=1
exec "${PYTHON:-python}" bench/gpu_check.py "$@"
