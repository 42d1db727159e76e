#!/usr/bin/env bash
# Session 11, call 4 (one GPU, about 8 min): the new pass 2 (cv from pass 1, 2-row blocks, one warp) and the
# two-pass backward at D = 768 too — float64 checks on CUDA, then compiled c4 static steps paired against the
# residual, new defaults against the old in the same process: XL/2 b128 (old pass 2) and B/2 b256 (one-pass).
# Ran at commit 60eb610 with the same checks and pairing written inline; since rewritten to call
# `python -m dartool.kernels.check --only` and `benchmarks/paired_step.py --env` (the same measurements).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 150 python3 -m dartool.kernels.check --only shared-prefix,shared-prefix-model 2>&1 \
  | tee $OUT/s11_p4_check.txt | tail -4
echo "after $(( $(date +%s) - T0 )) s"
timeout 280 python3 benchmarks/paired_step.py --size XL --batch 128 --query static --compiled --rounds 4 \
  --env "old=DARTOOL_PREFIX_GRAD:16,4,128,2,3,0" --env "new=" --out $OUT/s11_p4_paired_XL 2>&1 | grep -E "paired|ratio|Error" | tail -6
echo "after $(( $(date +%s) - T0 )) s"
timeout 200 python3 benchmarks/paired_step.py --size B --batch 256 --query static --compiled --rounds 4 \
  --env "old=DARTOOL_PREFIX_CONFIG:8,1,3,1,0;8,2,3,1,0,1" --env "new=" --out $OUT/s11_p4_paired_B 2>&1 | grep -E "paired|ratio|Error" | tail -6
echo "done after $(( $(date +%s) - T0 )) s"
