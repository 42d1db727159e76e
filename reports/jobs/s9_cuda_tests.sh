#!/usr/bin/env bash
# Session 9: the CUDA tests with shared prefixes in the code.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
timeout 300 python3 -m pytest -x -q -s tests/test_router_kernel.py tests/test_probe.py -k cuda 2>&1 \
  | tee $OUT/cuda_tests.txt | grep -E "passed|failed|FAIL|Error" | cut -c1-200 | tail -6
