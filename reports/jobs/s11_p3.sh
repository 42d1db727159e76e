#!/usr/bin/env bash
# Session 11, call 3 (one GPU, about 8 min): pass 2 with cv from pass 1 at one warp / 2-row blocks (the new
# default) — float64 checks on CUDA, a sweep around it at XL/2 P = 14 and the short prefixes P = 3, 6, B/2's one-pass
# backward against two passes (kernel times), then compiled XL/2 b128 static c4, paired: new pass 2 against the old.
# Ran at commit e30a05c with the same checks and pairing written inline; since rewritten to call
# `python -m dartool.kernels.check --only` and `benchmarks/paired_step.py --env` (the same measurements).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 150 python3 -m dartool.kernels.check --only shared-prefix,shared-prefix-model 2>&1 \
  | tee $OUT/s11_p3_check.txt | tail -4
echo "after $(( $(date +%s) - T0 )) s"
G=""
for g in 16,2,128,1,3,1 32,2,128,1,3,1 16,2,64,1,3,1 16,1,128,1,3,1 16,2,128,1,2,1 16,2,128,1,4,1 16,4,128,1,3,1 \
         16,2,256,2,3,1 8,2,128,1,3,1 16,4,128,2,3,0 16,2,128,1,3,1; do G="$G --grad $g"; done
timeout 150 python3 benchmarks/prefix_bench.py --size XL --batch 128 --P 14 --K 4 --partial bf16 $G \
  --json $OUT/s11_p3_XL.json 2>&1 | grep -v Warn | cut -c1-420
for P in 3 6; do
timeout 60 python3 benchmarks/prefix_bench.py --size XL --batch 128 --P $P --K 4 --partial bf16 \
  --grad 16,4,128,2,3,0 --grad 16,2,128,1,3,1 --json $OUT/s11_p3_XL_P$P.json 2>&1 | grep -v Warn | cut -c1-420
done
echo "after $(( $(date +%s) - T0 )) s"
timeout 90 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 6 --K 4 --partial bf16 \
  --config "8,1,3,1,0;8,2,3,1,0,1" --config "8,1,3,1,0;4,1,3,1,4,2" --grad 16,2,128,1,3,1 --grad 16,4,128,2,3,0 \
  --grad 16,2,128,1,3,0 --json $OUT/s11_p3_B.json 2>&1 | grep -v Warn | cut -c1-420
echo "after $(( $(date +%s) - T0 )) s"
timeout 330 python3 benchmarks/paired_step.py --size XL --batch 128 --query static --compiled --rounds 4 \
  --env "old=DARTOOL_PREFIX_GRAD:16,4,128,2,3,0" --env "new=" --out $OUT/s11_p3_paired_XL 2>&1 | grep -E "paired|ratio|Error" | tail -6
echo "done after $(( $(date +%s) - T0 )) s"
