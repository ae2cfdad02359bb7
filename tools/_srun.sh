#!/usr/bin/env bash
# Shared by slurm_train.sh and slurm_test.sh: run tools/TOOL under srun with
# --launcher=slurm (mmpretrain's interface and environment variables).
#   bash tools/_srun.sh PARTITION JOB_NAME TOOL [tool arguments]
# Environment: GPUS (tasks in all, 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5),
# SRUN_ARGS (extra srun options), PY_ARGS (extra tool options), GRES
# (gpu:GPUS_PER_NODE; none on CPU-only nodes), PYTHON (python). Rank, world
# size and MASTER_ADDR come from slurm (first host of the node list);
# MASTER_PORT defaults to 29500.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
TOOL=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
GRES=${GRES:-gpu:${GPUS_PER_NODE}}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
GRES_ARG=()
if [ "$GRES" != "none" ]; then GRES_ARG=(--gres="$GRES"); fi

# shellcheck disable=SC2086  # SRUN_ARGS / PY_ARGS are word lists
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES_ARG[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$ROOT/tools/$TOOL" "${@:4}" \
    --launcher=slurm ${PY_ARGS:-}
