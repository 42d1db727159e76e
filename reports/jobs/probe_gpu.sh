#!/usr/bin/env bash
# Session 3, call 2 (one GPU, ~8 min): issue 3 after the probe's reductions were restructured (token-major
# Gram matrices for the cosines, token-grouped importance contraction), and the compiled SiT-B/2 step profile
# for issue 6. Results: $OUT/log.txt and the benchmark's JSON + Markdown.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/res; mkdir -p $OUT $R
T0=$(date +%s)
{
for routing in residual dar; do
  echo "== probe profile $routing"
  timeout 100 python3 benchmarks/probe_profile.py --size XL --batch 64 --device cuda --precision bf16 --routing $routing --rows 16 2>&1 | cut -c1-40,100-200 | head -24
  echo "after $(( $(date +%s) - T0 )) s"
done
for routing in residual dar; do
  echo "== probe overhead + full 32 x 1024 probe, $routing"
  timeout 170 python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --samples 1024 --timesteps 32 \
    --full --routing $routing --chunk-size 4 --out $R 2>&1 | tail -12
  echo "rc=$? after $(( $(date +%s) - T0 )) s"
  cp $R/* $OUT/ 2>/dev/null
done
echo "== compiled step profile B b256"
timeout $(( 580 - ($(date +%s) - T0) )) python3 benchmarks/step_profile.py --size B --batch 256 --compiled --rows 14 2>&1 | grep -v "^\s*$" | grep -v Warn | tail -40
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
ls $OUT
