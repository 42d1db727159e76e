#!/usr/bin/env bash
# For the next session (written in session 13, not run): the H100 bench's remaining parts at the current kernels,
# one H100 per call (name nvidia-h100-x1; the multi-GPU H100 kinds fell back to H200s twice in session 13).
#   call A:  PART=check     (about 4 min: the float64 check, then the CUDA tests other than the check)
#   call B:  PART=compiled  (about 7 min: compiled rows with their peak memory)
# Then on this machine: dartool bench --merge benchmarks/results/bench-NVIDIA-H100-80GB-HBM3-20261126-2332-merged.json
#   --merge <the new JSONs>   (the router, paired, eager and sampling parts are session 13's, same kernels).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
PART=${PART:-check}
timeout 560 python3 -m dartool.cli bench --quick --parts $PART --time-budget 550 --compile-budget 540 --out $OUT \
  > $OUT/h100_$PART.log 2>&1; echo "bench rc $?"
grep -E "correctness|compile|MISSED|met\]|wrote" $OUT/h100_$PART.log | tail -16 | cut -c1-200
if [ "$PART" = check ]; then
  timeout $(( 585 - ($(date +%s) - T0) )) python3 -m pytest -x -q tests/test_router_kernel.py tests/test_probe.py \
    tests/test_bench_timing.py -k "cuda and not matches_float64_reference" > $OUT/h100_cuda_tests.txt 2>&1
  tail -2 $OUT/h100_cuda_tests.txt
fi
echo "done after $(( $(date +%s) - T0 )) s"
