#!/usr/bin/env bash
# Session 11, last call (H100, about 4 min): where the compiled XL/2 b64 static c4 step's time goes on the card where
# it misses 1.10 (1.108), and the prefix kernels at that shape.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 240 python3 benchmarks/step_profile.py --size XL --batch 64 --query static --compiled --rows 30 \
  > $OUT/s11_profile_static_XL64_H100.txt 2>&1
tail -9 $OUT/s11_profile_static_XL64_H100.txt
echo "after $(( $(date +%s) - T0 )) s"
timeout 60 python3 benchmarks/prefix_bench.py --size XL --batch 64 --P 14 --K 4 --partial bf16 \
  --json $OUT/s11_prefix_XL64_H100.json 2>&1 | grep -v Warn | cut -c1-400
echo "done after $(( $(date +%s) - T0 )) s"
