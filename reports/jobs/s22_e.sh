#!/usr/bin/env bash
# Session 22, last device minutes: the H100's SiT-XL/2 b32 static c4 under CUDA graphs at the current kernels
# (FEW_SOURCES), residual + static c4 (dartool bench --parts graphs). One nvidia-h100-x1 call, ~3 min.
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R/bench_xl32
timeout 200 python3 -m dartool bench --parts graphs --sizes XL --xl-batch 32 --variants static-c4 \
    --compile-budget 190 --out $R/bench_xl32 > $R/bench_xl32.log 2>&1; echo "bench XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -h "ms x\|Error" $R/bench_xl32.log | cut -c1-160
(cd $R && tar czf $OUT/s22_e.tgz status *.log bench_*)
