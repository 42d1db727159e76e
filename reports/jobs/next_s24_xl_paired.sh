#!/usr/bin/env bash
# Session 24: SiT-XL/2 b32 under CUDA graphs, paired rounds (residual, static c4, dynamic c4; 6 interleaved rounds),
# at the session 24 defaults, on one card (~6 min; run on nvidia-h100-x1 -> results/s24_e-h100-paired, then on
# nvidia-h200 -> results/s24_f-h200-paired). s24_d's XL/2 paired rounds were skipped: that job's --time-budget 380 was
# below what compiling and recording three XL/2 models takes (~250 s).
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 540 python3 -m dartool bench --parts graphs,paired --paired-rounds 6 --paired-mode cudagraphs --sizes XL \
  --xl-batch 32 --variants static-c4 --compile-budget 400 --time-budget 530 --out $R/xl32 > $R/xl32.log 2>&1
echo "xl32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -h "ms x\|paired\|MISSED\|\[met\]\|Skipped" $R/xl32.log $R/xl32/*.md | cut -c1-200
grep -h "Traceback\|Error" -A3 $R/*.log | head -30
(cd $R && tar czf $OUT/s24_xl_paired.tgz status *.log xl32)
echo "done after $(( $(date +%s) - T0 )) s"
