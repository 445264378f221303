#!/usr/bin/env bash
# The GPU benchmark of issue 13 (bench/gpu.py; docs/gpu.md): installs nothing, under 10 min on
# one H200, a markdown table printed last. Run from the repository root of a machine where
# `make venv` has run (it installs torch from pyproject when nvidia-smi answers):
#   bench/gpu.sh                      # fit, resume, 1/4/16/32 trials per GPU, on CUDA
#   bench/gpu.sh --device cpu --quick # every section at smoke size, no GPU needed
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" bench/gpu.py "$@"
