#!/usr/bin/env bash
# Session 29, third call: the new defaults (LN-fused routers keep h in bf16, router_triton.LN_H = auto; dynamic
# routers save q per dispatch.save_query_count: every router at D >= 1024, the last 17 of 25 at SiT-B/2) measured
# as `dartool bench` runs them, paired rounds under CUDA graphs and graphs rows (peak memory):
#   GPU 0: B/2 b256 paired, then graphs rows (static c4, dynamic c4)
#   GPU 1: B/2 b256 paired with the last 20 routers saving q, then its graphs row (the memory margin)
#   GPU 2: XL/2 b32 paired (static c4, dynamic c4), then graphs rows
#   GPU 3: the float64 check at the defaults, then XL/2 b64 graphs rows (memory at a larger batch)
# One nvidia-h200-x4 call, ~9.5 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
bench() {   # bench GPU NAME TIMEOUT PARTS SIZE-ARGS VARIANTS ENV...
  local G=$1 N=$2 TO=$3 P=$4 S=$5 V=$6; shift 6
  env "$@" CUDA_VISIBLE_DEVICES=$G timeout $TO python3 -m dartool bench --parts $P --paired-rounds 6 \
    --paired-mode cudagraphs $S --variants $V --compile-budget $((TO - 15)) --time-budget $((TO - 10)) \
    --out $R/$N > $R/$N.log 2>&1
  echo "$N ($*) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
( bench 0 B_pair 245 paired "--sizes B" dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT
  bench 0 B_graphs 260 graphs "--sizes B" static-c4,dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT ) &
( bench 1 B_pair_k20 245 paired "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=20
  bench 1 B_graphs_k20 230 graphs "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=20 ) &
( bench 2 XL_pair 330 paired "--sizes XL --xl-batch 32" static-c4,dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT
  bench 2 XL_graphs 235 graphs "--sizes XL --xl-batch 32" static-c4,dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT ) &
( CUDA_VISIBLE_DEVICES=3 timeout 300 python3 -m dartool.kernels.check \
    --only ln-fused,dynamic-recompute,compiled-dynamic-saved,compiled-accum,model --json $R/check.json > $R/check.log 2>&1
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  bench 3 XL64_graphs 250 graphs "--sizes XL --xl-batch 64" static-c4,dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT ) &
wait
cat $R/status; nvidia-smi -L
grep -h "paired SiT\|skip\|ms x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "FAIL\|router check" $R/check.log | head -20
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s29_c.tgz status *.log $(ls *.json 2>/dev/null) */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
