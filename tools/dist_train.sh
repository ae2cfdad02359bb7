#!/usr/bin/env bash
# Train on GPUS processes of this node (or NNODES nodes) with torchrun.
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
# Backend: nccl with GPUs, gloo without (same script on a laptop, in CI and on
# a GPU cluster). PYTHON selects the interpreter (default: python).
set -euo pipefail
exec bash "$(dirname "$0")/_torchrun.sh" train.py "$2" "$1" "${@:3}"
