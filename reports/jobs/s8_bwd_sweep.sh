#!/usr/bin/env bash
# Session 8: the pipelined backward at SiT-XL/2 (D = 1152): warps per row, rows per program, pipeline depth; then
# compiled SiT-XL/2 b64 rows (residual, static c4 at the default and at the sweep's best static configuration).
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 240 python3 benchmarks/router_kernels_bench.py --shape XL:64:9 --shape XL:64:17 --sweep bwd.num_warps=1,2 \
  --sweep bwd.rows=4,8,16 --sweep bwd.pipe=3,4,6 --json $OUT/bwd_sweep_XL.json 2>&1 | grep -E "fwd|Error" | cut -c1-150
echo "after $(( $(date +%s) - T0 )) s"
BEST=$(python3 - <<'PY'
import json, os, collections
d = json.load(open(os.path.join(os.environ["OUT"], "bwd_sweep_XL.json")))
for q in ("static", "dynamic"):
    t = collections.defaultdict(float)
    for r in d["rows"]:
        if r["query"] == q:
            t[r["variant"]] += r["bwd_ms"]
    best = min(t, key=t.get)
    import sys; print(q, best, round(t[best], 4), "ms (N = 9 + 17)", file=sys.stderr)
    if q == "static":
        print("/".join(x.replace("bwd.", "b.") for x in best.split()))
PY
)
echo "best static: $BEST"
timeout $(( 585 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py XL 64 bwd_best_XL 330 residual/static/recompute/auto \
  dar/static/recompute/auto dar/static/recompute/auto/$BEST 2>&1 | grep -E "^SiT|skip|Error" | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
