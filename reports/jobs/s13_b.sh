#!/usr/bin/env bash
# Session 13, call 2 (four GPUs of one host (asked for H100s; it ran on four H200s), about 9 min): `dartool bench --quick` at the current kernels (router
# speedups now from GPU time), split over the GPUs with --parts (check | paired rounds | router + eager rows +
# sampling | compiled rows), joined with --merge; the CUDA tests after the check. Everything in one archive.
# (Ran as written: its CUDA tests re-ran the float64 check and were cut by the timeout after 10 passing tests.)
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
W=/tmp/s13b; mkdir -p $W/c0 $W/c1 $W/c2 $W/c3
T0=$(date +%s)
B="python3 -m dartool.cli bench --quick"
( export CUDA_VISIBLE_DEVICES=0
  timeout 330 $B --parts check --out $W/c0 > $W/c0.log 2>&1
  timeout $(( 560 - ($(date +%s) - T0) )) python3 -m pytest -x -q -s tests/test_router_kernel.py tests/test_probe.py tests/test_bench_timing.py \
    -k cuda > $W/cuda_tests.txt 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout 560 $B --parts paired --paired-rounds 6 --time-budget 550 --compile-budget 540 --out $W/c1 > $W/c1.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=2
  timeout 560 $B --parts router,eager,sampling --time-budget 550 --out $W/c2 > $W/c2.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=3
  timeout 560 $B --parts compiled --time-budget 550 --compile-budget 540 --out $W/c3 > $W/c3.log 2>&1 ) &
wait
echo "parts done after $(( $(date +%s) - T0 )) s"
M=""; for d in c2 c3 c1 c0; do for j in $W/$d/*.json; do [ -f "$j" ] && M="$M --merge $j"; done; done

python3 -m dartool.cli bench $M --out $W/merged >> $W/merge.log 2>&1
tail -30 $W/merge.log | cut -c1-220
grep -E "passed|failed|FAIL|Error" $W/cuda_tests.txt | tail -3
cp $W/merged/*.md $OUT/ 2>/dev/null
tar czf $OUT/s13_b_all.tgz -C $W .
echo "done after $(( $(date +%s) - T0 )) s"
