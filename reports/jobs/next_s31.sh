#!/usr/bin/env bash
# Written in session 31, not run (its device time was spent): KERNEL_NOTES "Session 31 — Next" 1 and 2, one
# nvidia-h200 call, ~5 min. Carry the zarr wheels and .commit.
# The step's own router backward launches at SiT-B/2 b256 dynamic c4, compiled, each timed in place and replayed
# (benchmarks/launch_inputs.py --replays 3; its cfg column shows each launch's PIPE / UNROLL / NC):
#   1. every q kept, compiled accumulation on (PENDING=100), DARTOOL_ROUTER_BWD_ACCUM unset vs pipe=3: router_kernels
#      _bench has pipe=3 20 % faster per accumulating launch (s31_d), the step's router backwards did not move (s31_e)
#   2. the defaults vs DARTOOL_ROUTER_DYN_RPIPE=0 (dynamic launches off the row pipeline): the bench has fresh N = 10
#      launches 20 % faster off it (s31_d), session 28's step the row pipeline faster
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
LI="python3 benchmarks/launch_inputs.py --size B --batch 256 --query dynamic --modes compiled --replays 3"
for ACC in "" pipe=3; do
  DARTOOL_SAVE_QUERY_LAST=all DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROUTER_BWD_ACCUM=$ACC timeout 150 $LI \
    --json $R/inputs_all_accum_${ACC:-default}.json > $R/inputs_all_accum_${ACC:-default}.log 2>&1
  echo "accum on, BWD_ACCUM='$ACC' rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
done
for RP in "" 0; do
  DARTOOL_ROUTER_DYN_RPIPE=$RP timeout 150 $LI --json $R/inputs_rpipe_${RP:-default}.json \
    > $R/inputs_rpipe_${RP:-default}.log 2>&1
  echo "defaults, DYN_RPIPE='$RP' rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
done
cat $R/status; nvidia-smi -L
python3 - "$R" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(f"{sys.argv[1]}/inputs_*.json")):
    d = json.load(open(f))
    rows = d.get("compiled", d) if isinstance(d, dict) else d
    rows = rows if isinstance(rows, list) else next(iter(rows.values()))
    by = {}
    for r in rows:
        k = (r["N"], r["ACCUM"], r["NC"] > 0)
        ms, rep = by.get(k, (0.0, 0.0))
        by[k] = (ms + r.get("ms", 0.0), rep + r.get("replay_ms", 0.0))
    tot = sum(v[0] for v in by.values()), sum(v[1] for v in by.values())
    print(f"{f.rsplit('/', 1)[1]}: in step {tot[0]:.2f} ms, replayed {tot[1]:.2f} ms over {len(rows)} launches")
    for (n, acc, rp), (ms, rep) in sorted(by.items()):
        print(f"   N={n:2d} accum={acc!s:5s} row_pipe={rp!s:5s} in step {ms:6.3f} replayed {rep:6.3f}")
PY
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/next_s31.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
