#!/usr/bin/env bash
# Session 29, last call: with h in bf16, keeping h costs 4 bytes a row element against a second read of the sources
# that the row-pipelined dynamic backward (D < 1024) mostly finds in cache; recomputing h in more routers frees
# 100 MB each at SiT-B/2 b256, which could pay for every query kept (all 25: 1.268 paired but memory 1.169).
# DARTOOL_RECOMPUTE_H_MAX=N (new; recompute_h_max, 3 by default for dynamic routers) with every query kept, SiT-B/2
# b256 dynamic c4, each arm on its own card against its own residual:
#   GPU 0: paired, all q, hmax 6      GPU 1: graphs row (time, memory), all q, hmax 6
#   GPU 2: graphs row, all q, hmax 5  GPU 3: paired at the defaults (K = 17, hmax 3), this run's baseline
# One nvidia-h200-x4 call, ~4 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
bench() {   # bench GPU NAME TIMEOUT PARTS VARIANTS ENV...
  local G=$1 N=$2 TO=$3 P=$4 V=$5; shift 5
  env "$@" CUDA_VISIBLE_DEVICES=$G timeout $TO python3 -m dartool bench --parts $P --paired-rounds 6 \
    --paired-mode cudagraphs --sizes B --variants $V --compile-budget $((TO - 15)) --time-budget $((TO - 10)) \
    --out $R/$N > $R/$N.log 2>&1
  echo "$N ($*) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
bench 0 B_pair_all_h6 245 paired dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all DARTOOL_RECOMPUTE_H_MAX=6 &
bench 1 B_graphs_all_h6 245 graphs dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all DARTOOL_RECOMPUTE_H_MAX=6 &
bench 2 B_graphs_all_h5 245 graphs dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all DARTOOL_RECOMPUTE_H_MAX=5 &
bench 3 B_pair_default 245 paired dynamic-c4 DARTOOL_SAVE_QUERY_LAST=auto &
wait
cat $R/status; nvidia-smi -L
grep -h "paired SiT\|skip\|ms x" $R/*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s29_e.tgz status *.log */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
