#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: run tools/TOOL on NPROC processes
# of this node (or NNODES nodes) with torchrun and --launcher pytorch.
#   bash tools/_torchrun.sh TOOL NPROC [tool arguments]
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT
# (29500), PYTHON (python). Backend: nccl with GPUs, gloo without.
set -euo pipefail
TOOL=$1
NPROC=$2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" \
    --master_port="${PORT:-29500}" \
    "$ROOT/tools/$TOOL" \
    "${@:3}" \
    --launcher pytorch
