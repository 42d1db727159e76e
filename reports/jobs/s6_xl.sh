#!/usr/bin/env bash
# Session 6, call 3 (one GPU, <= 9.5 min): the dynamic compile test again (it counted only the unfused op), the
# launch-configuration sweep of the LayerNorm-fused backward (ln_slot on / off, warps, split, unroll) at
# SiT-XL/2 b64 N = 9 and SiT-B/2 b256 N = 6, then compiled SiT-XL/2 b64 rows: residual / static c4 / dynamic c4
# (LN fused everywhere, ln_slot, the head's router fused too).
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 100 python3 -m pytest -p no:cacheprovider tests/test_router_kernel.py -k "cuda_model_uses_fused" 2>&1 | grep -E "passed|failed|Error" | tail -4
timeout 200 python3 benchmarks/router_sweep.py --ln --out $OUT/sweep --shape XL:64:9 --shape B:256:6 2>&1 | grep -E "^\||^##|forward best|Error" | tail -30
echo "after $(( $(date +%s) - T0 )) s"
BUDGET=$(( 575 - ($(date +%s) - T0) )) bash reports/jobs/s6_dyn.sh XL 64 0 2>&1 | grep -E "^SiT|done|Error|error" | tail -8
