#!/usr/bin/env bash
# Session 13, call 3 (one H100, about 9 min): the H100 at the current kernels, which no call has measured since
# session 11 (compiled XL/2 b64 static c4 was 1.108 then): `dartool bench --quick --parts router,paired` with six
# paired rounds, then the CUDA tests of the GPU-time timer (tests/test_bench_timing.py).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 540 python3 -m dartool.cli bench --quick --parts router,paired --paired-rounds 6 --time-budget 520 \
  --compile-budget 500 --out $OUT > $OUT/s13_c.log 2>&1; echo "bench rc $?"
grep -E "router N=|paired|MISSED|met\]|skipp" $OUT/s13_c.log | tail -24 | cut -c1-220
timeout $(( 585 - ($(date +%s) - T0) )) python3 -m pytest -x -q tests/test_bench_timing.py > $OUT/s13_c_tests.txt 2>&1
tail -2 $OUT/s13_c_tests.txt
echo "done after $(( $(date +%s) - T0 )) s"
