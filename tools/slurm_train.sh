#!/usr/bin/env bash
# Train on a slurm cluster (mmpretrain's interface):
#   GPUS=16 GPUS_PER_NODE=8 bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR [train.py options]
# Environment: GPUS (tasks in all, default 8), GPUS_PER_NODE (default 8),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options), PY_ARGS (extra
# train.py options, also taken from the arguments after WORK_DIR),
# GRES (default gpu:GPUS_PER_NODE; GRES=none on CPU-only nodes),
# PYTHON (default python). Rank, world size and MASTER_ADDR come from slurm
# (first host of the node list); MASTER_PORT defaults to 29500.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=${PY_ARGS:-""}
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
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "${PYTHON:-python}" -u "$ROOT/tools/train.py" "$CONFIG" \
    --work-dir="$WORK_DIR" --launcher=slurm ${PY_ARGS} "${@:5}"
