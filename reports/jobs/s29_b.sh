#!/usr/bin/env bash
# Session 29, second call: s29_a's paired arms were skipped (their --time-budget was under the bench's estimate),
# its graphs rows said: SiT-B/2 b256 dynamic c4 1.317 (h fp32, q recomputed) -> 1.266 (h bf16, every q saved) but
# memory 1.169; XL/2 b32 dynamic c4 1.328 (h bf16, q saved; ~1.42 paired in session 28), memory 1.119.
# Paired rounds under CUDA graphs (each arm against its own residual on its own card):
#   GPU 0: B/2 h16 (q recomputed) / h16 + the last 16 routers save q
#   GPU 1: B/2 h fp32 (session 28's default) / B/2 graphs rows h16 + last 16 save q (memory)
#   GPU 2: XL/2 b32 h16 (q recomputed) / XL/2 graphs rows h16 (memory)
#   GPU 3: XL/2 b32 h16 + every q saved / B/2 h16 + every q saved
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
QS=DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0
( bench 0 B_pair_h16 245 paired "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=auto
  bench 0 B_pair_h16_k16 245 paired "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=auto DARTOOL_SAVE_QUERY_LAST=16 ) &
( bench 1 B_pair_h32 245 paired "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=fp32
  bench 1 B_graphs_h16_k16 230 graphs "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=auto DARTOOL_SAVE_QUERY_LAST=16 ) &
( bench 2 XL_pair_h16 330 paired "--sizes XL --xl-batch 32" static-c4,dynamic-c4 DARTOOL_ROUTER_H=auto
  bench 2 XL_graphs_h16 235 graphs "--sizes XL --xl-batch 32" dynamic-c4 DARTOOL_ROUTER_H=auto ) &
( bench 3 XL_pair_h16_qs 330 paired "--sizes XL --xl-batch 32" dynamic-c4 DARTOOL_ROUTER_H=auto $QS
  bench 3 B_pair_h16_qs 225 paired "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=auto $QS ) &
wait
cat $R/status; nvidia-smi -L
grep -h "paired SiT\|skip\|ms x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s29_b.tgz status *.log */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
