#!/usr/bin/env bash
# Session 21: the H100's figures after the contiguous patch embedding (54ac41b; s21_b measured the H200s).
# One nvidia-h100-x2 call, two jobs at once, about 4-5 min:
#   GPU 0: dartool bench --parts graphs --sizes XL --xl-batch 32 (residual, static c4, dynamic c4), noise
#   GPU 1: the same for SiT-B/2 b256
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench_xl $R/bench_b
V=static-c4,dynamic-c4
( CUDA_VISIBLE_DEVICES=0 timeout 400 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 --variants $V \
    --compile-budget 380 --out $R/bench_xl > $R/bench_xl.log 2>&1; echo "bench XL rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 400 python3 -m dartool bench --parts graphs --sizes B --variants $V \
    --compile-budget 380 --out $R/bench_b > $R/bench_b.log 2>&1; echo "bench B rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status
grep -h "ms x\|time budget\|Error" $R/bench_*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s21_c.tgz status *.log bench_*)
echo "done after $(( $(date +%s) - T0 )) s"
