#!/usr/bin/env bash
# Session 3, call 4 (one GPU, <= 9.5 min): dartool bench --quick (issue 6: correctness incl. the dynamic-query
# recompute on CUDA, router vs byte floor, eager + compiled training steps with peak memory, sampling), then a
# repeat of the residual probe-overhead measurement (issue 3) if time is left.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; R=/tmp/res; mkdir -p $OUT $R
T0=$(date +%s)
{
echo "== dartool bench --quick"
timeout 470 python3 -m dartool bench --quick --out $R --time-budget 440 --compile-budget 240 2>&1 | grep -v "^\s*$" | tail -60
cp $R/bench-* $OUT/ 2>/dev/null
echo "after $(( $(date +%s) - T0 )) s"
LEFT=$(( 575 - ($(date +%s) - T0) ))
if [ $LEFT -gt 70 ]; then
  echo "== probe overhead, residual (repeat)"
  timeout $LEFT python3 benchmarks/probe_overhead.py --device cuda --size XL --batch 64 --routing residual --chunk-size 4 \
    --out $R/rep --note "repeat measurement" 2>&1 | tail -7
fi
echo "done after $(( $(date +%s) - T0 )) s"
} 2>&1 | tee $OUT/log.txt
cp $R/rep/*.json $OUT/probe_repeat.json 2>/dev/null
ls $OUT
