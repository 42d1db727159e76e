#!/usr/bin/env bash
# Session 8: where the compiled static c4 step's time goes now (kernel time by kind, DAR - residual), with the
# pipelined router kernels: SiT-XL/2 b128 and SiT-B/2 b256.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 280 python3 benchmarks/step_profile.py --size XL --batch 128 --query static --compiled > $OUT/profile_XL_static.txt 2>&1
echo "XL rc $? after $(( $(date +%s) - T0 )) s"; grep -iE "kind|router|gemm|inductor|attention|other|ms/step|step" $OUT/profile_XL_static.txt | tail -25 | cut -c1-160
timeout $(( 580 - ($(date +%s) - T0) )) python3 benchmarks/step_profile.py --size B --batch 256 --query static --compiled > $OUT/profile_B_static.txt 2>&1
echo "B rc $? after $(( $(date +%s) - T0 )) s"; grep -iE "kind|router|gemm|inductor|attention|other|ms/step|step" $OUT/profile_B_static.txt | tail -25 | cut -c1-160
