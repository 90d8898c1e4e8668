#!/usr/bin/env bash
# GPU check, for a machine with a CUDA GPU and JAX's CUDA build (about 5 minutes):
#   1. the whole test suite on the GPU backend (float64 brute force, SciPy, scikit-learn oracles;
#      the precision test pins every product to true float32, no TF32);
#   2. W1 (MNIST 10,000 x 60,000 x 784) on the GPU at the default and at larger blocks, with the
#      float32 matmul floor, jax.scipy.stats.gaussian_kde, and precision='default' (TF32) beside.
# Usage: benchmarks/gpu_check.sh MNIST_DIR [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: benchmarks/gpu_check.sh MNIST_DIR [OUT_DIR]}
out=${2:-.}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 JAXKDE_DATA_DIR=$data
nvidia-smi -L
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -25
for blocks in "1024 4096" "4096 16384"; do
  set -- $blocks
  timeout 150 python3 benchmarks/mnist_pixels.py "$data" --skip sklearn broadcast \
    --default-precision --repeats 5 --batch-size "$1" --chunk-size "$2" \
    --out "$out/w1_gpu_b$1_c$2.md" 2>&1 | grep -v "^#"
done
