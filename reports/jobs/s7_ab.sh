#!/usr/bin/env bash
# Session 7, call 3 (one GPU, about 8.5 min): D as a compile-time constant in both router kernels and g re-read
# after the source loop in the dynamic backward (no spills at D = 1152, ptxas on the CPU), against the previous
# commit (0ca3690, .carry/old.tar.gz) in the same job on the same card:
#   1. the LayerNorm-fused kernels alone, static and dynamic query, XL/2 b64 N = 9 and B/2 b256 N = 6
#   2. Nsight Compute on the new dynamic backward at XL/2 (occupancy, stall reasons, DRAM throughput)
#   3. compiled SiT-XL/2 b64 steps: residual, static c4, dynamic c4 (new); static and dynamic c4 (old)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
mkdir -p /tmp/old && tar xzf .carry/old.tar.gz -C /tmp/old && cp benchmarks/router_kernels_bench.py /tmp/old/benchmarks/
echo "== kernels, new"
timeout 70 python3 benchmarks/router_kernels_bench.py --json $OUT/kernels_new.json 2>&1 | grep -E "fwd|Error" | tail -6
echo "== kernels, old (0ca3690)"
PYTHONPATH=/tmp/site:/tmp/old timeout 70 python3 /tmp/old/benchmarks/router_kernels_bench.py --json $OUT/kernels_old.json 2>&1 \
  | grep -E "fwd|Error" | tail -6
echo "after $(( $(date +%s) - T0 )) s"
timeout 80 ncu --target-processes all -k regex:_router_bwd_kernel --launch-skip 2 --launch-count 1 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
  python3 benchmarks/router_kernels_bench.py --shape XL:64:9 --query dynamic --ncu > $OUT/ncu_bwd_dyn_XL.txt 2>&1
grep -E "Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|DRAM Throughput|Duration|Block Limit Reg|Warp Cycles Per Issued|Stall|ERR" $OUT/ncu_bwd_dyn_XL.txt | head -24
echo "after $(( $(date +%s) - T0 )) s"
timeout 230 python3 reports/jobs/s6_rows.py XL 64 steps-new 215 residual/static/recompute/auto \
  dar/static/recompute/auto dar/dynamic/recompute/auto 2>&1 | grep -E "ms/step|skip|Error" | tail -4
echo "after $(( $(date +%s) - T0 )) s"
PYTHONPATH=/tmp/site:/tmp/old timeout 150 python3 /tmp/old/reports/jobs/s6_rows.py XL 64 steps-old 135 \
  dar/static/recompute/auto dar/dynamic/recompute/auto 2>&1 | grep -E "ms/step|skip|Error" | tail -3
echo "done after $(( $(date +%s) - T0 )) s"
