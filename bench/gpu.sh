#!/usr/bin/env bash
# The GPU benchmark of issue 13 (bench/gpu.py; docs/gpu.md): installs nothing, under 10 min on
# one H200, a markdown table printed last (each row also on stderr as it is measured). Run from
# the repository root, with the project's .venv if there is one (`make venv`) and, for CUDA,
# its torch sees a GPU (a CPU build made on another machine does not), else python3 holding
# torch (a lent GPU image: the sweeps (c) are skipped without the sweep extra):
#   bench/gpu.sh                      # fit, resume, 1/4/16/32 trials per GPU, on CUDA
#   bench/gpu.sh --device cpu --quick # every section at smoke size, no GPU needed
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=python3
if [ -x .venv/bin/python ]; then
  case " $* " in
    *" --device cpu "* | *" --device=cpu "*) PYTHON=.venv/bin/python ;;
    *) if .venv/bin/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
          2>/dev/null; then PYTHON=.venv/bin/python
       else echo "[gpu bench] .venv's torch sees no CUDA device: python3 runs it" >&2; fi ;;
  esac
fi
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "[gpu bench] $PYTHON has no torch: make venv, or a python3 with torch" >&2; exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1  # rows as they come, even if the run is cut short
exec "$PYTHON" bench/gpu.py "$@"
