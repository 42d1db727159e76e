#!/usr/bin/env bash
# Session 9: the shared-prefix kernels alone, launch configurations swept at SiT-XL/2 and SiT-B/2 chunk shapes.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
C="--config 8,4,3,1 --config 8,4,1,1 --config 8,4,3,0 --config 8,2,3,1 --config 8,8,3,1 --config 4,4,3,1 --config 16,4,3,1 --config 8,4,2,1 --config 8,1,3,1"
timeout 250 python3 benchmarks/prefix_bench.py --size XL --batch 64 --P 14 --K 4 $C --json $OUT/prefix_XL.json 2>&1 | grep -v Warn | cut -c1-220
echo "after $(( $(date +%s) - T0 )) s"
timeout 250 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 6 --K 4 $C --json $OUT/prefix_B.json 2>&1 | grep -v Warn | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
