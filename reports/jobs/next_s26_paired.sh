#!/usr/bin/env bash
# Session 26: static c4 against the residual in paired rounds under CUDA graphs (the issue's "ratios within one
# run") at the new default (router_triton.LEAN 3 at D >= 1024: the XL/2 few-source backward spills less, -0.46 ms
# of router backward a step at b32 on an H100, s26_c). ONLY=xl32 (default) or ONLY=xl64; one nvidia-h100-x1 call
# each, ~6-9 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
W=${ONLY:-xl32}
case $W in xl32) B=32 ;; xl64) B=64 ;; *) echo "ONLY=xl32 or xl64"; exit 2 ;; esac
timeout 575 python3 -m dartool bench --parts graphs,paired --paired-rounds 6 --paired-mode cudagraphs --sizes XL \
  --xl-batch $B --variants static-c4 --compile-budget 400 --time-budget 560 --out $R/$W > $R/$W.log 2>&1
echo "$W rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -h "ms x\|paired\|MISSED\|\[met\]\|skip" $R/$W.log | cut -c1-220
grep -h "Traceback\|Error" -A3 $R/*.log | head -30
(cd $R && tar czf $OUT/s26_paired_$W.tgz status *.log $W)
echo "done after $(( $(date +%s) - T0 )) s"
