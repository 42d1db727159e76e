#!/usr/bin/env bash
# Session 7, call 8 (one GPU, about 8.5 min): gradient chains under torch.compile (each source's gradient summed in
# the routers' kernels as the backward goes; dispatch.CHAIN_GRADS). 1. the CUDA tests (incl. the compiled-chain
# check against float64); 2. compiled SiT-B/2 b256 rows, chain on / off in the same run: peak memory and time.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
echo "== CUDA tests"
timeout 280 python3 -m pytest -s -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 \
  | tee $OUT/cuda_tests.txt | grep -E "passed|failed|Error|FAIL|compiled-chain" | tail -12
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 580 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py B 256 chain_B $(( 565 - ($(date +%s) - T0) )) \
  residual/static/recompute/auto dar/static/recompute/auto/ch1 dar/static/recompute/auto/ch0 \
  dar/dynamic/saved/auto/ch1 dar/dynamic/recompute/auto/ch1 dar/dynamic/saved/auto/ch0 2>&1 | grep -E "^SiT|Error"
echo "done after $(( $(date +%s) - T0 )) s"
