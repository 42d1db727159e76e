#!/usr/bin/env bash
# Session 6, final calls (one GPU each, <= 9.5 min).
#   part 1: CUDA tests; dartool bench --quick --no-check --no-compile (router vs floor, eager steps, sampling);
#           compiled SiT-B/2 b256 residual / static c4 / dynamic c4 (defaults: h auto, q recomputed)
#   part 2: compiled SiT-XL/2 b64 residual / static c4 / dynamic c4 / dynamic c4 with q saved; then SiT-B/2 b256
#           residual / static c4 / dynamic c4 with q saved again (a second sample of the rows near their targets)
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
PART=${1:-1}
T0=$(date +%s)
if [ "$PART" = 1 ]; then
  echo "== CUDA tests"
  timeout 180 python3 -m pytest -s -p no:cacheprovider tests/test_router_kernel.py tests/test_probe.py -k "cuda" -rs 2>&1 | grep -E "passed|failed|Error|FAIL" | tail -12
  echo "after $(( $(date +%s) - T0 )) s"
  echo "== dartool bench --quick --no-check --no-compile"
  timeout 170 python3 -m dartool bench --quick --no-check --no-compile --out $OUT/bench --time-budget 160 2>&1 | grep -v "^\s*$" | tail -30
  echo "after $(( $(date +%s) - T0 )) s"
  timeout $(( 575 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py B 256 compiled_B $(( 560 - ($(date +%s) - T0) )) \
    residual/static/recompute/auto dar/static/recompute/auto dar/dynamic/recompute/auto 2>&1 | grep -E "^SiT|Error"
else
  timeout 400 python3 reports/jobs/s6_rows.py XL 64 compiled_XL 390 residual/static/recompute/auto \
    dar/static/recompute/auto dar/dynamic/recompute/auto dar/dynamic/saved/auto 2>&1 | grep -E "^SiT|Error"
  echo "after $(( $(date +%s) - T0 )) s"
  timeout $(( 575 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py B 256 compiled_B2 $(( 560 - ($(date +%s) - T0) )) \
    residual/static/recompute/auto dar/static/recompute/auto dar/dynamic/saved/auto 2>&1 | grep -E "^SiT|Error"
fi
echo "done after $(( $(date +%s) - T0 )) s"
ls -R $OUT
