#!/usr/bin/env bash
# Used by slurm_train.sh with REQUEUE=1: submit tools/TOOL as a requeueable
# batch job whose one step is tools/_srun.sh (same tasks, same environment).
#   bash tools/_sbatch.sh PARTITION JOB_NAME LOG_DIR TOOL [tool arguments]
# Environment: that of _srun.sh, plus SIGNAL (USR1@120), TIME, SBATCH_ARGS,
# WAIT (1: sbatch --wait).
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
LOG_DIR=$3
TOOL=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
GRES=${GRES:-gpu:${GPUS_PER_NODE}}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$LOG_DIR"
GRES_ARG=()
if [ "$GRES" != "none" ]; then GRES_ARG=(--gres="$GRES"); fi
OPT_ARGS=()
if [ -n "${TIME:-}" ]; then OPT_ARGS+=(--time="$TIME"); fi
if [ "${WAIT:-0}" = "1" ]; then OPT_ARGS+=(--wait); fi
# the batch script: one srun step over the job's tasks (printf %q quotes
# every argument as the shell reads it back)
STEP=$(printf '%q ' bash "$ROOT/tools/_srun.sh" "$PARTITION" "$JOB_NAME" \
    "$TOOL" "${@:5}")
# shellcheck disable=SC2086  # SBATCH_ARGS is a word list
exec sbatch --parsable -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES_ARG[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" \
    --requeue \
    --signal="${SIGNAL:-USR1@120}" \
    --open-mode=append \
    --output="$LOG_DIR/slurm-%j.out" \
    "${OPT_ARGS[@]}" \
    ${SBATCH_ARGS:-} \
    --wrap="$STEP"
