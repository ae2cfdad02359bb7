#!/usr/bin/env bash
# Train on a slurm cluster (mmpretrain's interface):
#   GPUS=16 GPUS_PER_NODE=8 bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR [train.py options]
# Environment: GPUS (tasks in all, default 8), GPUS_PER_NODE (default 8),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options), PY_ARGS (extra
# train.py options, also taken from the arguments after WORK_DIR),
# GRES (default gpu:GPUS_PER_NODE; GRES=none on CPU-only nodes),
# PYTHON (default python). Rank, world size and MASTER_ADDR come from slurm
# (first host of the node list); MASTER_PORT defaults to 29500.
#
# Preemption-safe, requeued runs (docs/distributed.md, "Preemption and
# requeue"): REQUEUE=1 submits a batch job instead (sbatch --requeue) and
# returns its id; the job gets SIGNAL (default USR1@120: SIGUSR1 120 s before
# its time limit), saves a checkpoint at the current iteration, requeues
# itself, and its restart resumes from that batch (--auto-resume). Also:
# TIME (sbatch --time, e.g. 2-00:00:00), SBATCH_ARGS (extra sbatch options),
# WAIT=1 (sbatch --wait: return when the job has ended). The job's output
# goes to WORK_DIR/slurm-JOBID.out (appended to by each restart).
# Without REQUEUE, SIGNAL=USR1@120 is passed to srun (a checkpoint and a
# clean stop before the time limit; resume with --resume).
set -euo pipefail
if [ "${REQUEUE:-0}" = "1" ]; then
    exec bash "$(dirname "$0")/_sbatch.sh" "$1" "$2" "$4" train.py "$3" \
        --work-dir="$4" "${@:5}" --auto-resume
fi
if [ -n "${SIGNAL:-}" ]; then
    export SRUN_ARGS="--signal=${SIGNAL} ${SRUN_ARGS:-}"
fi
exec bash "$(dirname "$0")/_srun.sh" "$1" "$2" train.py "$3" \
    --work-dir="$4" "${@:5}"
