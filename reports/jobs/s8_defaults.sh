#!/usr/bin/env bash
# Session 8, after the pipe sweep: the new per-shape defaults (vec4 everywhere, the forward pipelined 4 deep at
# chunked N, the backward at D >= 1024 pipelined 4 / 3 deep) through the CUDA tests; the N = 57 router and the
# SiT-B/2 dynamic backward with two sources per iteration pipelined; compiled SiT-B/2 b256 rows with the new defaults
# and the per-router q-saving budget (the last K of 25 dynamic routers save q).
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 240 python3 -m pytest -x -q -s tests/test_router_kernel.py tests/test_probe.py -k cuda 2>&1 \
  | tee $OUT/cuda_tests.txt | grep -E "passed|failed|FAIL|Error" | cut -c1-200 | tail -6
echo "after $(( $(date +%s) - T0 )) s"
timeout 60 python3 benchmarks/router_kernels_bench.py --shape XL:32:57 --query static --sweep pipe=1,3,4 \
  --json $OUT/pipe57.json 2>&1 | grep -E "fwd|Error" | cut -c1-150
timeout 45 python3 benchmarks/router_kernels_bench.py --shape B:256:6 --query dynamic --sweep bwd.pipe=1,2,3 \
  --set bwd.unroll=2 --set bwd.prefetch=0 --json $OUT/pipeB_unroll2.json 2>&1 | grep -E "fwd|Error" | cut -c1-150
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 585 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py B 256 defaults_B 330 residual/static/recompute/auto \
  dar/static/recompute/auto dar/dynamic/recompute/auto/sq0 dar/dynamic/recompute/auto/sq8 \
  dar/dynamic/recompute/auto/sq16 2>&1 | grep -E "^SiT|skip|Error" | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
