#!/usr/bin/env bash
# Session 11 final, part 2: continue part 1's results (--resume) with the float64 correctness check and the paired
# compiled rounds (residual, static c4, dynamic c4, 6 rounds) of both sizes; then the CUDA tests.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 450 python3 -m dartool.cli bench --quick --time-budget 430 --paired-rounds 6 \
  --resume benchmarks/results/bench-NVIDIA-H100-80GB-HBM3-20261126-1906.json --out $OUT 2>&1 \
  | tee $OUT/bench2.log | grep -vE "^\s*$" | tail -22 | cut -c1-200
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 592 - ($(date +%s) - T0) )) python3 -m pytest -x -q -s tests/test_router_kernel.py tests/test_probe.py -k cuda 2>&1 \
  | tee $OUT/cuda_tests.txt | grep -E "passed|failed|FAIL|Error" | cut -c1-200 | tail -6
echo "done after $(( $(date +%s) - T0 )) s"
