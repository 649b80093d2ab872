#!/usr/bin/env bash
# The first-GPU check: the CUDA path on a random-weight stand-in of google/ddpm-cifar10-32's UNet (throughput vs the
# NFE x forward floor, float16/bfloat16 vs float32, CPU vs CUDA agreement, make regress on CUDA), sized for about 10
# minutes on one GPU; on a machine without CUDA (or with --cpu) it runs the CPU parts and says what it skipped. Writes
# one markdown file for benchmarks/RESULTS.md (benchmarks/device_check-<host>-<date>.md, or --out FILE).
#   benchmarks/device_check.sh [--cpu] [--samples N] [--nfe 10,20] [--width 128] [--out FILE]   (--help: all options)
# Python: $PYTHON, else the checkout's .venv (make install), else python3; this checkout's code comes first.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" benchmarks/device_check.py "$@"
