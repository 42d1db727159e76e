#!/usr/bin/env bash
# Session 30, one nvidia-h200 call (~5 min): the CUDA tests at the session's defaults (dq into a fresh buffer for
# routers that recompute q), last run on a GPU in session 13. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 480 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_router_kernel.py tests/test_probe.py \
  > $OUT/cuda_tests.txt 2>&1
echo "cuda-marked tests rc $? at $(( $(date +%s) - T0 )) s"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_bench_timing.py tests/test_offset_tables.py \
  "tests/test_train.py::test_dataset_batch_on_the_gpu_equals_the_cpu_batch" >> $OUT/cuda_tests.txt 2>&1
echo "other CUDA tests rc $? at $(( $(date +%s) - T0 )) s"
nvidia-smi -L
grep -E "passed|failed|FAIL|Error" $OUT/cuda_tests.txt | cut -c1-200 | tail -12
