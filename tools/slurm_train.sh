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
exec bash "$(dirname "$0")/_srun.sh" "$1" "$2" train.py "$3" \
    --work-dir="$4" "${@:5}"
