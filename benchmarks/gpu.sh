#!/usr/bin/env bash
# Every GPU check and benchmark, one script, under 8 minutes on one H100/H200 (the timeouts
# below add up to 470 s): W1's product per precision against float64 (precision.py), the seed's
# kernel and the account's hard cases against their products with the phase breakdown
# (marked.py), correctness of every workload against float64 at each precision and the main
# workloads timed against their floors (gpu.py), and W3's grid methods (low_dim.py --no-peers).
# Writes four tables and one log (gpu.log) to OUT_DIR. With --tests, the whole test suite runs
# on the GPU backend first (about 3 more minutes).
# Usage: benchmarks/gpu.sh MNIST_DIR [OUT_DIR] [--tests]
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: benchmarks/gpu.sh MNIST_DIR [OUT_DIR] [--tests]}
out=${2:-.}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAXKDE_DATA_DIR=$data
{
  nvidia-smi -L 2>/dev/null || rocm-smi --showproductname 2>/dev/null || true
  if [[ " $* " == *" --tests "* ]]; then
    timeout 300 python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -15
  fi
  timeout 60 python3 benchmarks/precision.py "$data" --out "$out/precision.md"
  timeout 120 python3 benchmarks/marked.py "$data" --out "$out/marked.md"
  timeout 180 python3 benchmarks/gpu.py "$data" --out "$out/gpu.md"
  timeout 110 python3 benchmarks/low_dim.py --no-peers --out "$out/low_dim_gpu.md"
} 2>&1 | tee "$out/gpu.log"
