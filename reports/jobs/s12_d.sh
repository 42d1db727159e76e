#!/usr/bin/env bash
# Session 12, last call (one GPU, about 6 min): the float64 check again (call s12_c's failed in the check's own new
# finishing-kernel case: CUDA results compared with CPU references, a device mismatch; every kernel case passed) and
# the router microbench alone on the host (in s12_c it ran beside three compiling processes: its host-bound
# fwd+bwd timing at N = 57 moved from 1.67 to 2.48 ms while the kernels' own times did not move). Then the CUDA
# tests other than the one that re-runs the same check.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 420 python3 -m dartool.cli bench --quick --parts check,router --out $OUT > $OUT/s12_d.log 2>&1
grep -vE "\[ok\]" $OUT/s12_d.log | tail -14 | cut -c1-200
echo "after $(( $(date +%s) - T0 )) s"
timeout $(( 570 - ($(date +%s) - T0) )) python3 -m pytest -x -q -s tests/test_router_kernel.py tests/test_probe.py \
  -k "cuda and not matches_float64_reference" > $OUT/s12_d_cuda_tests.txt 2>&1
grep -E "passed|failed|FAIL|Error" $OUT/s12_d_cuda_tests.txt | tail -3 | cut -c1-200
echo "done after $(( $(date +%s) - T0 )) s"
