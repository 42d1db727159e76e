#!/usr/bin/env bash
# Session 13, call 1 (one H200, ~3 min): the router-backward speed-up regression. Atomic reductions on / off in
# one process (interleaved rounds), host / wall / GPU-only time per call, cProfile of the host side, the unfused
# router's GPU times, at N = 57 and N = 9.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 300 python3 benchmarks/router_profile.py --n 57 --ab --cprofile --reference --json $OUT/s13_a_n57.json \
  > $OUT/s13_a_n57.txt 2>&1; echo "rc $?"
grep -E "round|medians|unfused" $OUT/s13_a_n57.txt
timeout 150 python3 benchmarks/router_profile.py --n 9 --ab --no-tables --json $OUT/s13_a_n9.json \
  > $OUT/s13_a_n9.txt 2>&1; echo "rc $?"
grep -E "medians" $OUT/s13_a_n9.txt
echo "done after $(( $(date +%s) - T0 )) s"
