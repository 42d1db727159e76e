#!/usr/bin/env bash
# Session 29: LayerNorm-fused routers keep h in bf16 (router_triton.LN_H = auto, the new default; was float32),
# which halves h's memory and traffic; with that memory back, dynamic routers may save q instead of recomputing
# it in the backward (DARTOOL_RECOMPUTE_DYNAMIC_QUERY=0). Paired rounds under CUDA graphs (ratios each against its
# own residual on its own card) and graphs rows (peak memory), SiT-B/2 b256 and SiT-XL/2 b32:
#   GPU 0: B/2 paired, h16 (recompute q) / h16 + q saved / h fp32 (the session 28 default)
#   GPU 1: B/2 graphs rows (time, memory), h16 + q saved / h fp32
#   GPU 2: XL/2 b32 paired then graphs rows, h16 + q saved
#   GPU 3: the float64 check at the new defaults (ln-fused incl. amp-h16, dynamic, compiled, model), then
#          XL/2 b32 paired with h fp32
# One nvidia-h100-x4 / h200-x4 call, ~9.5 min. Carry the zarr wheels and .commit.
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
( bench 0 B_pair_h16 170 paired "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=auto
  bench 0 B_pair_h16_qs 170 paired "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=auto $QS
  bench 0 B_pair_h32 170 paired "--sizes B" dynamic-c4 DARTOOL_ROUTER_H=fp32 ) &
( bench 1 B_graphs_h16_qs 270 graphs "--sizes B" static-c4,dynamic-c4 DARTOOL_ROUTER_H=auto $QS
  bench 1 B_graphs_h32 270 graphs "--sizes B" static-c4,dynamic-c4 DARTOOL_ROUTER_H=fp32 ) &
( bench 2 XL_pair_h16_qs 260 paired "--sizes XL --xl-batch 32" static-c4,dynamic-c4 DARTOOL_ROUTER_H=auto $QS
  bench 2 XL_graphs_h16_qs 290 graphs "--sizes XL --xl-batch 32" static-c4,dynamic-c4 DARTOOL_ROUTER_H=auto $QS ) &
( CUDA_VISIBLE_DEVICES=3 timeout 290 python3 -m dartool.kernels.check \
    --only ln-fused,dynamic-recompute,compiled-dynamic-saved,model --json $R/check.json > $R/check.log 2>&1
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  bench 3 XL_pair_h32 250 paired "--sizes XL --xl-batch 32" static-c4,dynamic-c4 DARTOOL_ROUTER_H=fp32 ) &
wait
cat $R/status; nvidia-smi -L
grep -h "paired SiT\|ms/step\|mem x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "FAIL\|router check" $R/check.log | head -20
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s29_a.tgz status *.log $(ls *.json 2>/dev/null) */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
