#!/usr/bin/env bash
# make gpu-check: the one-command GPU check (tools/gpu_check.py).
# A GPU node with python + torch + CUDA but no network: collect the missing
# wheels beforehand, in this checkout, with
#   python tools/collect_wheels.py        (writes .device_wheels/)
# and take .device_wheels along; they are installed here into /tmp/site.
# With --dry-run nothing is installed (the project's .venv is used if any).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ " $* " == *" --dry-run "* ]]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
elif compgen -G ".device_wheels/*.whl" > /dev/null; then
  echo "[gpu-check] installing $(ls .device_wheels/*.whl | wc -l) wheels from .device_wheels into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .device_wheels/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
exec "$PY" tools/gpu_check.py "$@"
