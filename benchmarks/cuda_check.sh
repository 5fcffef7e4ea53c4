#!/usr/bin/env bash
# The CUDA checks of a lent GPU machine, in one run: the backend tests on the device (the
# Triton kernel compiled for it), the Triton kernel's launch configurations (sweep_triton),
# then bench_core's edge-path cases on CUDA (N=100k and N=1M, dot product and GAT, a
# power-law graph). Writes logs and JSON under $OUT (or ./out).
# Run from the repository root: bash benchmarks/cuda_check.sh
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
python3 -c "import torch, triton, torch_geometric as g; print('torch', torch.__version__, 'triton', triton.__version__, 'pyg', g.__version__, torch.cuda.get_device_name())"
# TESTS: pytest arguments (default: both CUDA test files); SWEEP_S=0 skips the sweep
timeout "${TEST_S:-260}" python3 -m pytest -q -p no:cacheprovider -o addopts="-ra" \
  ${TESTS:-tests/test_cuda.py tests/test_fused.py} 2>&1 | tee "$OUT/tests.log" | tail -15
if [ "${SWEEP_S:-140}" != 0 ]; then
  timeout "${SWEEP_S:-140}" python3 -m benchmarks.sweep_triton --out "$OUT/sweep_triton_cuda.json" \
    2>&1 | tee "$OUT/sweep.log" | tail -60
fi
timeout "${BENCH_S:-200}" python3 -m benchmarks.bench_core --device cuda --budget 4 --repeats 5 \
  --cases b-N100000 e-gat-N100000 h-gat --out "$OUT/core_cuda.json" 2>&1 | tee "$OUT/bench.log" | grep -v "^\[" | tail -30
timeout "${BIG_S:-120}" python3 -m benchmarks.bench_core --device cuda --big --budget 4 --repeats 5 \
  --out "$OUT/core_cuda_1m.json" 2>&1 | tee "$OUT/bench_1m.log" | grep -v "^\[" | tail -30
