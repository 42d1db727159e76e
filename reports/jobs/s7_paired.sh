#!/usr/bin/env bash
# Session 7, last call (one GPU, about 6 min): compiled static c4 and dynamic c4 against one residual model in
# interleaved rounds (benchmarks/paired_step.py, several DAR models per process), SiT-XL/2 b64 and SiT-B/2 b256.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 300 python3 benchmarks/paired_step.py --size XL --batch 64 --query static --query dynamic --compiled \
  --rounds 6 --out $OUT/paired 2>&1 | grep -E "^\||median|Error|graphs" | tail -12
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 580 - ($(date +%s) - T0) )) python3 benchmarks/paired_step.py --size B --batch 256 --query static \
  --query dynamic --compiled --rounds 8 --out $OUT/paired 2>&1 | grep -E "^\||median|Error|graphs" | tail -14
echo "done after $(( $(date +%s) - T0 )) s"
