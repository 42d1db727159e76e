#!/usr/bin/env bash
# Prepared in session 7 for the next session's first GPU call (one GPU, about 8 min; not yet run):
#   1. vec4 in the router backward (built and float64-checked on the CPU, never timed): the kernels alone at
#      XL/2 b64 N = 9, 17 and B/2 b256 N = 6, static and dynamic query, with and without
#   2. compiled SiT-XL/2 b64 rows: residual, static c4 and dynamic c4 with vec4 off / on (same run)
#   3. what is alive at the compiled dynamic c4 backward's peak (SiT-B/2 b256; step_memory.py --peak-buffers)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 120 python3 benchmarks/router_kernels_bench.py --shape XL:64:9 --shape XL:64:17 --shape B:256:6 --vec4 \
  --json $OUT/vec4_kernels.json 2>&1 | grep -E "fwd|Error" | cut -c1-150
echo "after $(( $(date +%s) - T0 )) s"
timeout 330 python3 reports/jobs/s6_rows.py XL 64 vec4_XL 315 residual/static/recompute/auto \
  dar/static/recompute/auto/v40 dar/static/recompute/auto/v41 dar/dynamic/recompute/auto/v40 \
  dar/dynamic/recompute/auto/v41 2>&1 | grep -E "^SiT|skip|Error" | cut -c1-220
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 580 - ($(date +%s) - T0) )) python3 benchmarks/step_memory.py --size B --batch 256 --compiled \
  --variant dynamic --peak-buffers 12 --json $OUT/peak_buffers_B_dynamic.json 2>&1 | tail -16
echo "done after $(( $(date +%s) - T0 )) s"
