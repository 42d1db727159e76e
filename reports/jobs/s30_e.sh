#!/usr/bin/env bash
# Session 30, one nvidia-h200-x4 call (~6 min). Carry the zarr wheels and .commit.
# s30_d: in-kernel accumulation (ACCUM) costs SiT-XL/2 b32's dynamic backward launches ~18 % (its extra reads of
# the running sums), and compiled_slots turns it on for XL/2 dynamic c4 (465 waiting gradients >= 200; session 28
# measured it time-neutral when q was recomputed and h float32). With q kept and h bf16 now:
#   GPU 0: XL/2 b32 dynamic c4 paired at the defaults (accumulation on)
#   GPU 1: the same with accumulation off (DARTOOL_COMPILED_ACCUM=0)
#   GPU 2: graphs row (memory) of XL/2 b32 dynamic c4 with accumulation off
#   GPU 3: XL/2 b32 dynamic c4 paired with every q recomputed (DARTOOL_SAVE_QUERY_LAST=0), dq now into a fresh
#          buffer (session 29: 1.425 with dq over q)
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
bench 0 XL_pair 330 paired "--sizes XL --xl-batch 32" dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT &
bench 1 XL_pair_noaccum 330 paired "--sizes XL --xl-batch 32" dynamic-c4 DARTOOL_COMPILED_ACCUM=0 &
bench 2 XL_graphs_noaccum 260 graphs "--sizes XL --xl-batch 32" dynamic-c4 DARTOOL_COMPILED_ACCUM=0 &
bench 3 XL_pair_recompute 330 paired "--sizes XL --xl-batch 32" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=0 &
wait
cat $R/status; nvidia-smi -L
grep -h "paired SiT\|skip\|ms x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s30_e.tgz status *.log */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
