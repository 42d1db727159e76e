#!/usr/bin/env bash
# SUPERSEDED: its two profiles ran inside reports/jobs/s22_a.sh (session 22, results/s22_a-profile).
# Written in session 21, NOT yet run. Where are DAR static c4's 3.4-4.7 ms above its routers' as-built byte floor
# (README "Targets", KERNEL_NOTES session 21)? benchmarks/step_profile.py --compiled on the fixed residual
# (commit 54ac41b or later): GPU time per kernel kind for the residual and DAR c4, "DAR - residual" per kind, and
# the routers + prefix passes against dartool.kernels.traffic.as_built at the measured copy rate, and DAR's other
# kernels against the residual's. SiT-XL/2 b32 and SiT-B/2 b256, one GPU each on an x2 machine, about 4 min.
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
( CUDA_VISIBLE_DEVICES=0 timeout 400 python3 benchmarks/step_profile.py --size XL --batch 32 --compiled --rows 30 \
    > $OUT/profile_XL32.txt 2>&1; echo "XL rc $? at $(( $(date +%s) - T0 )) s" >> $OUT/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 400 python3 benchmarks/step_profile.py --size B --batch 256 --compiled --rows 30 \
    > $OUT/profile_B256.txt 2>&1; echo "B rc $? at $(( $(date +%s) - T0 )) s" >> $OUT/status ) &
wait
cat $OUT/status
grep -h "routers + prefix\|extra\|=== " $OUT/profile_*.txt
echo "done after $(( $(date +%s) - T0 )) s"
