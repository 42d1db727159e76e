#!/usr/bin/env bash
# Session 24, last device call: the final kernels on one H100 (nvidia-h100-x1, ~5 min):
#   SiT-B/2 b256 --parts graphs,paired --paired-mode cudagraphs (6 rounds; H200 s24_d: 1.072)
#   SiT-XL/2 b64 --parts graphs (residual + static c4, one run; H100 s23_c: 1.107)
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 300 python3 -m dartool bench --parts graphs,paired --paired-rounds 6 --paired-mode cudagraphs --sizes B \
  --variants static-c4 --compile-budget 250 --time-budget 290 --out $R/b256 > $R/b256.log 2>&1
echo "b256 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout $(( 540 - ($(date +%s) - T0) )) python3 -m dartool bench --parts graphs --sizes XL --xl-batch 64 \
  --variants static-c4 --compile-budget 220 --time-budget $(( 520 - ($(date +%s) - T0) )) --out $R/xl64 \
  > $R/xl64.log 2>&1
echo "xl64 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
for d in b256 xl64; do echo "== $d"; grep -h "ms x\|paired\|MISSED\|\[met\]\|Skipped" $R/$d.log | cut -c1-200; done
grep -h "Traceback\|Error" -A3 $R/*.log | head -30
(cd $R && tar czf $OUT/s24_h100_b_xl64.tgz status *.log b256 xl64)
echo "done after $(( $(date +%s) - T0 )) s"
