#!/usr/bin/env bash
# GPU check for a machine with a CUDA (or ROCm) GPU and JAX's matching build, under 10 minutes:
# correctness of every workload against float64 on the host, at each matrix-product precision,
# and the main workloads timed against their floors (benchmarks/gpu.py), after W3's grid methods
# (benchmarks/low_dim.py --no-peers).
# With --tests, the whole test suite runs on the GPU backend first (about 3 more minutes).
# Usage: benchmarks/gpu.sh MNIST_DIR [OUT_DIR] [--tests]
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: benchmarks/gpu.sh MNIST_DIR [OUT_DIR] [--tests]}
out=${2:-.}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAXKDE_DATA_DIR=$data
nvidia-smi -L 2>/dev/null || rocm-smi --showproductname 2>/dev/null || true
if [[ " $* " == *" --tests "* ]]; then
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -15
fi
# W3 for every method, jaxkde alone (no KDEpy on the GPU image), beside the CPU run's table
# (benchmarks/results/low_dim.md); about 3 minutes.
timeout 300 python3 benchmarks/low_dim.py --no-peers --out "$out/low_dim_gpu.md" 2>&1 |
  tee "$out/low_dim_gpu.log"
timeout 290 python3 benchmarks/gpu.py "$data" --out "$out/gpu.md" 2>&1 | tee "$out/gpu.log"
