#!/usr/bin/env bash
# Evaluate a checkpoint on GPUS processes with torchrun.
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
# Same environment variables as tools/dist_train.sh.
set -euo pipefail
exec bash "$(dirname "$0")/_torchrun.sh" test.py "$3" "$1" "$2" "${@:4}"
