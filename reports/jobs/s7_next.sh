#!/usr/bin/env bash
# Prepared in session 6 for the next session's first call (one GPU, about 6 min; not yet run):
#   1. compiled SiT-B/2 b256 static c4 vs residual, interleaved rounds in one process (does B/2 meet 1.10?)
#   2. the same at SiT-XL/2 b64
#   3. where the compiled dynamic c4 peak sits with q recomputed (default) and with q saved
#      (why recomputing h frees 0.14 of memory for static models but only 0.03 for dynamic ones with q saved)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 200 python3 benchmarks/paired_step.py --size B --batch 256 --query static --compiled --rounds 8 \
  --out $OUT/paired 2>&1 | grep -E "^\||Median|Error" | tail -12
echo "after $(( $(date +%s) - T0 )) s"
timeout 240 python3 benchmarks/paired_step.py --size XL --batch 64 --query static --compiled --rounds 6 \
  --out $OUT/paired 2>&1 | grep -E "^\||Median|Error" | tail -10
echo "after $(( $(date +%s) - T0 )) s"
timeout 100 python3 benchmarks/step_memory.py --size B --batch 256 --compiled --variant residual --variant dynamic \
  --json $OUT/step_memory_recompute.json 2>&1 | tail -4
DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0 timeout 80 python3 benchmarks/step_memory.py --size B --batch 256 --compiled \
  --variant dynamic --json $OUT/step_memory_q_saved.json 2>&1 | tail -3
echo "done after $(( $(date +%s) - T0 )) s"
