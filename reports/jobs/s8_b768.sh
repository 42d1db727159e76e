#!/usr/bin/env bash
# Session 8, last: the backward at D = 768 (SiT-B/2 b256 N = 6): rows per program x pipelined one-source loop, then
# compiled SiT-B/2 rows: residual, static c4 at the default and at the sweep's best static configuration.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 120 python3 benchmarks/router_kernels_bench.py --shape B:256:6 --sweep bwd.rows=4,8,16 --sweep bwd.pipe=1,3 \
  --json $OUT/bwd_sweep_B.json 2>&1 | grep -E "fwd|Error" | cut -c1-150
echo "after $(( $(date +%s) - T0 )) s"
BEST=$(python3 - <<'PY'
import json, os
d = json.load(open(os.path.join(os.environ["OUT"], "bwd_sweep_B.json")))
rows = [r for r in d["rows"] if r["query"] == "static"]
best = min(rows, key=lambda r: r["bwd_ms"])
print("/".join(x.replace("bwd.", "b.") for x in best["variant"].split()) + ("/b.unroll=1/b.prefetch=0" if "pipe=3" in best["variant"] else ""))
PY
)
echo "best static: $BEST"
timeout $(( 330 - ($(date +%s) - T0) )) python3 reports/jobs/s6_rows.py B 256 bwd_best_B 250 residual/static/recompute/auto \
  dar/static/recompute/auto dar/static/recompute/auto/$BEST dar/static/recompute/auto 2>&1 | grep -E "^SiT|skip|Error" | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
