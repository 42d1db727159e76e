#!/usr/bin/env bash
# Session 9, second call: the prefix kernels with w re-read per source (fewer registers) at both widths, then
# compiled SiT-B/2 b256 paired with the per-width prefix configuration (static and static_t, shared off / on).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 120 python3 benchmarks/prefix_bench.py --size XL --batch 64 --P 14 --K 4 --config 8,2,3,1,1 --config 8,4,3,1,1 \
  --config 8,1,3,1,1 --config 4,2,3,1,1 --config 8,2,3,1,0 --json $OUT/prefix_XL_wreload.json 2>&1 | grep -v Warn | cut -c1-220
timeout 100 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 6 --K 4 --config 8,2,3,1,1 --config 8,1,3,1,1 \
  --config 8,2,3,1,0 --json $OUT/prefix_B_wreload.json 2>&1 | grep -v Warn | cut -c1-220
timeout 60 python3 benchmarks/prefix_bench.py --size B --batch 256 --P 3 --K 4 --json $OUT/prefix_B_P3.json 2>&1 | grep -v Warn | cut -c1-220
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 590 - ($(date +%s) - T0) )) python3 reports/jobs/s9_shared.py B 256 shared_B2 4 static static_t 2>&1 | grep -vE "^\s*$|Warning|warn" | cut -c1-200 | tail -14
echo "done after $(( $(date +%s) - T0 )) s"
