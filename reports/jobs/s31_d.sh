#!/usr/bin/env bash
# Session 31, call d (one nvidia-h200): can an accumulating SiT-B/2 dynamic backward launch cost about its bytes?
# s31_c: with compiled accumulation on (every q kept), the 25 router backwards of the B/2 b256 dynamic c4 step take
# 15.3 -> 23.3 ms while the rest of DAR's kernels save 4.3 ms; per launch (s31_a) +0.39 ms for ~0.17 ms of bytes.
# An accumulating launch falls back from the row pipeline to a loop with nothing in flight (pipe 1, unroll 1).
#   1. router_kernels_bench --writes fresh,accum at B:256:6 / B:256:10 dynamic: the default, then the loop's
#      configurations for accumulating launches (pipe 2 / 3, unroll 2 with and without prefetch, 2 warps)
#   2. the best of them (if >= 10 % faster than the default's accumulating launches) through
#      DARTOOL_ROUTER_BWD_ACCUM: B/2 b256 dynamic c4 paired under graphs, every q kept, compiled accumulation on
#      (s30_c without it: 1.305 / 1.125; all kept, accumulation off: 1.268 / 1.169; default: 1.282 / 1.120)
#   3. the float64 check's accumulating parts with it
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
source reports/jobs/bench_arm.sh
KB="python3 benchmarks/router_kernels_bench.py --shape B:256:6 --shape B:256:10 --query dynamic --writes fresh,accum"
timeout 60 $KB --json $R/acc_default.json > $R/acc_default.log 2>&1; echo "default rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout 80 $KB --set bwd.rpipe=1 --sweep bwd.pipe=2,3 --json $R/acc_pipe.json > $R/acc_pipe.log 2>&1; echo "pipe rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout 80 $KB --set bwd.rpipe=1 --set bwd.unroll=2 --sweep bwd.prefetch=0,1 --json $R/acc_unroll.json > $R/acc_unroll.log 2>&1; echo "unroll rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
timeout 80 $KB --set bwd.rpipe=1 --set bwd.num_warps=2 --sweep bwd.pipe=1,2 --json $R/acc_warps.json > $R/acc_warps.log 2>&1; echo "warps rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/acc_*.log | grep -v "^\s*$" | grep "ms" | cut -c1-160
WIN=$(python3 - "$R" <<'PY'
import json, sys, glob
R = sys.argv[1]
best, base = {}, None
for f in sorted(glob.glob(f"{R}/acc_*.json")):
    for r in json.load(open(f))["rows"]:
        if r["writes"] != "accum":
            continue
        c = r["bwd_config"]
        key = "default" if f.endswith("acc_default.json") else ",".join(
            f"{k}={c[k]}" for k in ("pipe", "unroll", "prefetch", "num_warps"))
        best[key] = best.get(key, 0.0) + r["bwd_ms"]
base = best.pop("default")
key, ms = min(best.items(), key=lambda kv: kv[1])
print(f"accumulating launches, B:256:6 + B:256:10: default {base:.3f} ms, best {key} {ms:.3f} ms", file=sys.stderr)
print(key if ms <= 0.9 * base else "")
PY
)
echo "winner: '${WIN}'" >> $R/status
if [ -n "$WIN" ]; then
  bench 0 B_pair_all_accum_cfg 245 paired "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all \
    DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROUTER_BWD_ACCUM=$WIN
  DARTOOL_ROUTER_BWD_ACCUM=$WIN timeout 110 python3 -m dartool.kernels.check --only compiled-accum,tapped-sources \
    --json $R/check.json > $R/check.log 2>&1
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
fi
cat $R/status; nvidia-smi -L
grep -h "paired SiT\|skip\|ms x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "FAIL\|router check\|\[ok\]" $R/check.log 2>/dev/null | cut -c1-200 | head -12
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s31_d.tgz status *.log $(ls *.json 2>/dev/null) $(ls */*.json */*.md 2>/dev/null))
echo "done after $(( $(date +%s) - T0 )) s"
