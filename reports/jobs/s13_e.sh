#!/usr/bin/env bash
# Session 13, call 5 (one H100, about 3 min, the last of the device budget): the H100's eager rows and sampling at
# the current kernels, to merge with call 3's router + paired results (same card type).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
timeout 185 python3 -m dartool.cli bench --quick --parts eager,sampling --time-budget 175 --out $OUT \
  > $OUT/s13_e.log 2>&1; echo "bench rc $?"
grep -E "eager|sampling|wrote" $OUT/s13_e.log | tail -14 | cut -c1-200
