#!/usr/bin/env bash
# Evaluate a checkpoint on a slurm cluster (mmpretrain's interface):
#   GPUS=8 bash tools/slurm_test.sh PARTITION JOB CONFIG CHECKPOINT [test.py options]
# Same environment variables as tools/slurm_train.sh.
set -euo pipefail
exec bash "$(dirname "$0")/_srun.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
