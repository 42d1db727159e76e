#!/usr/bin/env bash
# Session 11, call 1 (one GPU, about 5 min): session 10's last commit (the _row_grad_state refactor) re-verified on
# CUDA (float64 prefix / shared / model checks), the XL/2 prefix kernels at their defaults, and where the compiled
# XL/2 b128 static c4 step's time goes (kernel time by kind, DAR vs residual).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
bash reports/jobs/s10_review.sh
mv $OUT/s10_review_check.txt $OUT/s11_first_check.txt; mv $OUT/s10_review_XL.json $OUT/s11_first_XL.json
echo "after $(( $(date +%s) - T0 )) s"
timeout 260 python3 benchmarks/step_profile.py --size XL --batch 128 --query static --compiled --rows 30 \
  > $OUT/s11_profile_static_XL.txt 2>&1
tail -50 $OUT/s11_profile_static_XL.txt
echo "done after $(( $(date +%s) - T0 )) s"
