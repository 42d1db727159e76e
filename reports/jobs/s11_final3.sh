#!/usr/bin/env bash
# Session 11 final, part 3 (H100): part 2 ran out of its time budget before the XL/2 paired rounds (the float64
# check takes 206 s on an H100); continue the same JSON with them.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 560 python3 -m dartool.cli bench --quick --time-budget 540 --paired-rounds 6 \
  --resume benchmarks/results/bench-NVIDIA-H100-80GB-HBM3-20261126-1906.json --out $OUT 2>&1 \
  | tee $OUT/bench3.log | grep -vE "^\s*$" | grep -E "paired|MISSED|resum|correct" | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
