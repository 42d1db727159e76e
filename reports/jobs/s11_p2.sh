#!/usr/bin/env bash
# Session 11, call 2 (one GPU, about 3 min): pass 2 of the two-pass prefix backward with cv from pass 1 (no logit /
# 1/rms loads) and with the partial gradients held in bf16 (dplow): the float64 prefix checks on CUDA, then the
# kernels at XL/2 b128 P = 14 and B/2 b256 P = 6 (bf16 partials), old layout against the new ones in one process.
# Ran at commit 66d37fa with the same checks and pairing written inline; since rewritten to call
# `python -m dartool.kernels.check --only` and `benchmarks/paired_step.py --env` (the same measurements).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 150 python3 -m dartool.kernels.check --only shared-prefix,shared-prefix-model 2>&1 \
  | tee $OUT/s11_p2_check.txt | tail -4
echo "after $(( $(date +%s) - T0 )) s"
G=""
for g in 16,4,128,2,3,0,0 16,4,128,2,3,1,0 16,4,128,2,3,1,1 16,4,128,2,3,0,1 16,8,128,4,3,1,1 32,4,128,2,3,1,0 \
         16,4,256,4,3,1,1 16,2,128,1,3,1,0 16,2,128,1,3,1,1 16,4,128,2,4,1,1 16,4,128,2,3,1,0 16,4,128,2,3,0,0; do
  G="$G --grad $g"; done
timeout 200 python3 benchmarks/prefix_bench.py --size XL --batch 128 --P 14 --K 4 --partial bf16 $G \
  --json $OUT/s11_p2_XL.json 2>&1 | grep -v Warn | cut -c1-330
echo "after $(( $(date +%s) - T0 )) s"
timeout 60 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 6 --K 4 --partial bf16 \
  --json $OUT/s11_p2_B1.json 2>&1 | grep -v Warn | cut -c1-330
timeout 100 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 6 --K 4 --partial bf16 \
  --config "8,1,3,1,0;4,1,3,1,4,2" --grad 16,4,128,2,3,0,0 --grad 16,4,128,2,3,1,0 --grad 16,4,128,2,3,1,1 \
  --grad 16,2,128,1,3,1,1 --grad 16,4,256,4,3,1,1 --json $OUT/s11_p2_B2.json 2>&1 | grep -v Warn | cut -c1-330
echo "done after $(( $(date +%s) - T0 )) s"
