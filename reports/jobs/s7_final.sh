#!/usr/bin/env bash
# Session 7, final calls (one GPU each, <= 9.5 min), at the commit with D a compile-time constant in the kernels.
#   part 1: CUDA tests; dartool bench --quick --no-check --no-compile (router vs floor, eager steps, sampling);
#           SiT-B/2 b256 static c4 compiled, paired rounds against the residual (benchmarks/paired_step.py)
#   part 2: compiled SiT-XL/2 b64 residual / static c4 / dynamic c4 / dynamic c4 with q saved
#   part 3: CUDA tests (part 1 cut them at 180 s), then compiled SiT-B/2 b256 residual / static c4 / dynamic c4
#           (q recomputed, q saved)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
PART=${1:-1}
T0=$(date +%s)
if [ "$PART" = 1 ]; then
  echo "== CUDA tests"
  timeout 330 python3 -m pytest -s -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|Error|FAIL" | tail -12
  echo "after $(( $(date +%s) - T0 )) s"
  echo "== dartool bench --quick --no-check --no-compile"
  timeout 170 python3 -m dartool bench --quick --no-check --no-compile --out $OUT/bench --time-budget 160 2>&1 | grep -v "^\s*$" | tail -30
  echo "after $(( $(date +%s) - T0 )) s"
  timeout $(( 580 - ($(date +%s) - T0) )) python3 benchmarks/paired_step.py --size B --batch 256 --query static \
    --compiled --rounds 8 --out $OUT/paired 2>&1 | grep -E "^\||Median|Error|graphs" | tail -12
elif [ "$PART" = 2 ]; then
  timeout 400 python3 reports/jobs/s6_rows.py XL 64 compiled_XL 390 residual/static/recompute/auto \
    dar/static/recompute/auto dar/dynamic/recompute/auto dar/dynamic/saved/auto 2>&1 | grep -E "^SiT|Error"
else  # part 3: the CUDA tests (part 1's were cut by their time limit), then compiled SiT-B/2 rows
  echo "== CUDA tests"
  timeout 330 python3 -m pytest -s -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 \
    | tee $OUT/cuda_tests.txt | grep -E "passed|failed|Error|FAIL" | tail -12
  echo "after $(( $(date +%s) - T0 )) s"
  timeout $(( 575 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py B 256 compiled_B $(( 560 - ($(date +%s) - T0) )) \
    residual/static/recompute/auto dar/static/recompute/auto dar/dynamic/recompute/auto dar/dynamic/saved/auto 2>&1 | grep -E "^SiT|Error"
fi
echo "done after $(( $(date +%s) - T0 )) s"
ls -R $OUT
