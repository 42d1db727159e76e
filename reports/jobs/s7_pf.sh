#!/usr/bin/env bash
# Historical: ran at ebd480c; the pf_l2 code was measured slower and removed afterwards (KERNEL_NOTES, session 7).
# Session 7, call 4 (one GPU, about 8 min): the backward's L2 prefetch (pf_l2: sources requested from L2 that many
# iterations ahead, no registers held). 1. kernel sweep pf_l2 = 0..3 at XL/2 b64 N = 9, 17 and B/2 b256 N = 6, 10,
# static and dynamic query; 2. the best distance per width, then compiled steps with it against pf_l2 = 0, same run.
source reports/jobs/gpu_env.sh
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
timeout 150 python3 benchmarks/router_kernels_bench.py --shape XL:64:9 --shape XL:64:17 --shape B:256:6 \
  --shape B:256:10 --pf 0 --pf 1 --pf 2 --pf 3 --json $OUT/pf_sweep.json 2>&1 | grep -E "fwd|Error" | cut -c1-140
read PFXL PFB < <(python3 - $OUT/pf_sweep.json <<'PY'
import json, sys, collections
rows = json.load(open(sys.argv[1]))["rows"]
best = []
for w in ("XL", "B"):
    tot = collections.defaultdict(float)
    for r in rows:
        if r["shape"].startswith(w + ":"):
            tot[r["bwd_config"]["pf_l2"]] += r["bwd_ms"]
    best.append(min(tot, key=tot.get))
print(*best)
PY
)
echo "best pf_l2: XL $PFXL, B $PFB; after $(( $(date +%s) - T0 )) s"
timeout 330 python3 reports/jobs/s6_rows.py XL 64 pf-XL 310 residual/static/recompute/auto \
  dar/static/recompute/auto/pf0 dar/static/recompute/auto/pf$PFXL \
  dar/dynamic/recompute/auto/pf0 dar/dynamic/recompute/auto/pf$PFXL 2>&1 | grep -E "^SiT|skip|Error" | cut -c1-220
echo "after $(( $(date +%s) - T0 )) s"
timeout 100 python3 reports/jobs/s6_rows.py B 256 pf-B 90 dar/static/recompute/auto/pf0 \
  dar/static/recompute/auto/pf$PFB 2>&1 | grep -E "^SiT|skip|Error" | cut -c1-220
echo "done after $(( $(date +%s) - T0 )) s"
