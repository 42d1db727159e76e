#!/usr/bin/env bash
# Session 9 final, part 2: continue part 1's results (--resume) with the float64 correctness check (the shared
# prefixes' cases included) and the paired compiled rounds (residual, static c4, dynamic c4, 6 rounds) of both sizes.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
timeout 590 python3 -m dartool.cli bench --quick --time-budget 570 --paired-rounds 6 \
  --resume benchmarks/results/bench-NVIDIA-H200-20261126-1618.json --out $OUT 2>&1 \
  | tee $OUT/bench2.log | grep -vE "^\s*$" | tail -30 | cut -c1-200
