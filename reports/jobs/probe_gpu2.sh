#!/usr/bin/env bash
# Session 3, call 3 (one GPU, ~5 min): issue 3 after the stacks became block-major (contiguous copies) and the
# reductions moved to a side stream that overlaps the next step. CUDA probe tests first.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/res; mkdir -p $OUT $R
T0=$(date +%s)
{
echo "== CUDA probe tests"
timeout 90 python3 -m pytest -p no:cacheprovider tests/test_probe.py -k cuda 2>&1 | tail -4
echo "== reductions inline (overlap off), residual"
DARTOOL_PROBE_OVERLAP=0 timeout 60 python3 benchmarks/probe_profile.py --size XL --batch 64 --device cuda --precision bf16 --routing residual --rows 12 2>&1 | cut -c1-40,100-200 | grep -v Warn | head -20
echo "after $(( $(date +%s) - T0 )) s"
echo "== probe overhead + full probe, residual (overlap on)"
timeout 170 python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --samples 1024 --timesteps 32 \
  --full --routing residual --chunk-size 4 --out $R 2>&1 | tail -12
cp $R/* $OUT/ 2>/dev/null
echo "after $(( $(date +%s) - T0 )) s"
echo "== probe overhead, dar (overlap on)"
timeout 100 python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --routing dar --chunk-size 4 \
  --out $R/dar 2>&1 | tail -9
echo "after $(( $(date +%s) - T0 )) s"
echo "== probe overhead, residual, overlap off"
DARTOOL_PROBE_OVERLAP=0 timeout 100 python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --routing residual \
  --chunk-size 4 --out $R/off --note "DARTOOL_PROBE_OVERLAP=0" 2>&1 | tail -9
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
mkdir -p $OUT/x; cp $R/dar/*.json $OUT/x/dar.json 2>/dev/null; cp $R/off/*.json $OUT/x/off.json 2>/dev/null
ls -R $OUT
