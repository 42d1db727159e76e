#!/usr/bin/env bash
# Session 11 final, part 1 of 2 (one machine slot is 10 min): dartool bench --quick without the float64 check
# (part 2 runs it): router, eager and compiled training-step rows, sampling. Part 2 continues this JSON (--resume)
# with the check and the paired compiled rounds.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
timeout 585 python3 -m dartool.cli bench --quick --no-check --time-budget 530 --compile-budget 330 --out $OUT 2>&1 \
  | tee $OUT/bench1.log | grep -vE "^\s*$" | tail -40 | cut -c1-200
