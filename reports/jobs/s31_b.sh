#!/usr/bin/env bash
# Session 31, call b (nvidia-h200-x2): the CUDA tests (pytest -m cuda), which had not run whole on a GPU since
# session 13 (s30_f: cut off after 2 passed). Split over the two cards:
#   GPU 0: tests/test_router_kernel.py's cuda tests other than the float64 one (they compile tiny models), then
#          tests/test_probe.py's cuda tests
#   GPU 1: test_cuda_fused_router_matches_float64_reference (the whole float64 check with its model part, ~250 s)
source reports/jobs/gpu_env.sh >/dev/null
pip list 2>/dev/null | grep -i "^pytest " || echo "pytest missing"
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
( CUDA_VISIBLE_DEVICES=0 timeout 330 python3 -m pytest -v -rs -p no:cacheprovider -m cuda tests/test_router_kernel.py \
    -k "not float64_reference" --durations=0 > $R/cuda_tests_router.txt 2>&1
  echo "cuda tests (router_kernel, not float64) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m pytest -v -rs -p no:cacheprovider -m cuda tests/test_probe.py \
    --durations=0 > $R/cuda_tests_probe.txt 2>&1
  echo "cuda tests (probe) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 480 python3 -m pytest -v -rs -s -p no:cacheprovider -m cuda tests/test_router_kernel.py \
    -k float64_reference --durations=0 > $R/cuda_tests_float64.txt 2>&1
  echo "cuda tests (float64 check) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status; nvidia-smi -L
grep -hE "PASSED|FAILED|SKIPPED|ERROR|passed|failed" $R/cuda_tests*.txt | cut -c1-200 | tail -20
grep -h "router check" $R/cuda_tests_float64.txt
grep -h "Error\|assert" $R/cuda_tests*.txt | head -20
(cd $R && tar czf $OUT/s31_b.tgz status *.txt)
echo "done after $(( $(date +%s) - T0 )) s"
