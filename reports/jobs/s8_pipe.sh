#!/usr/bin/env bash
# Session 8: the source loops as Triton software pipelines (pipe = tl.range num_stages: cp.async copies of the next
# sources into shared memory). 1. float64 check with pipe 3 (+ vec4); 2. the kernels alone, pipe 1..4 (vec4 on);
# 3. compiled SiT-XL/2 b64 rows: residual, static / dynamic c4 at pipe 1 and at the best pipe of step 2.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
DARTOOL_ROUTER_PIPE=3 DARTOOL_ROUTER_VEC4=1 timeout 220 python3 -m dartool.kernels.check --json $OUT/check_pipe3.json \
  2>&1 | grep -E "FAIL|PASS|Error" | cut -c1-200 | tail -8
echo "after $(( $(date +%s) - T0 )) s"
timeout 150 python3 benchmarks/router_kernels_bench.py --shape XL:64:9 --shape XL:64:17 --shape B:256:6 \
  --sweep pipe=1,2,3,4 --set vec4=1 --json $OUT/pipe_kernels.json 2>&1 | grep -E "fwd|Error" | cut -c1-150
echo "after $(( $(date +%s) - T0 )) s"
BEST=$(python3 - <<'PY'
import json, os, collections
d = json.load(open(os.path.join(os.environ["OUT"], "pipe_kernels.json")))
t = collections.defaultdict(float)
for r in d["rows"]:
    if r["shape"].startswith("XL"):
        t[r["variant"]] += r["fwd_ms"] + r["bwd_ms"]
print(min(t, key=t.get).split("=")[1])
PY
)
echo "best pipe at XL (fwd + bwd, both queries, N = 9 and 17): $BEST"
timeout $(( 585 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py XL 64 pipe_XL 330 residual/static/recompute/auto \
  dar/static/recompute/auto/v41/p1 dar/static/recompute/auto/v41/p$BEST dar/dynamic/recompute/auto/v41/p1 \
  dar/dynamic/recompute/auto/v41/p$BEST 2>&1 | grep -E "^SiT|skip|Error" | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
