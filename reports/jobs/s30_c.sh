#!/usr/bin/env bash
# Session 30, one nvidia-h200-x4 call (~8.5 min). Carry the zarr wheels and .commit.
# New default: a dynamic router that recomputes q writes dq into a fresh buffer (router_triton.DQ_OVER_Q off; s30_b:
# writing it over q made those launches ~20 % slower). And s30_b found SiT-B/2 b256 dynamic c4's peak with every
# q kept at the end of the backward, with 12.8 GB of router gradients waiting for Inductor's per-source sums
# (compiled_slots' in-graph accumulation is off there: 105 waiting gradients < MIN_PENDING 200). So:
#   GPU 0: step_memory.py --peak-buffers, B/2 dynamic, accumulation forced on (DARTOOL_COMPILED_ACCUM_PENDING=100)
#          with every q kept and with the default; then the float64 check's dynamic parts
#   GPU 1: B/2 b256 dynamic c4 paired at the defaults (dq fresh), then its graphs row (memory)
#   GPU 2: the same with every q kept and accumulation on
#   GPU 3: the same with the default queries and accumulation on
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
( for SQ in all auto; do
    DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_SAVE_QUERY_LAST=$SQ CUDA_VISIBLE_DEVICES=0 timeout 200 \
      python3 benchmarks/step_memory.py --size B --batch 256 --compiled --variant dynamic --peak-buffers 16 \
      --json $R/memory_B_${SQ}_accum.json > $R/memory_B_${SQ}_accum.log 2>&1
    echo "memory B SAVE_QUERY_LAST=$SQ accum on rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done
  CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m dartool.kernels.check \
    --only dynamic-recompute,compiled-dynamic-saved,compiled-accum --json $R/check.json > $R/check.log 2>&1
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( bench 1 B_pair 245 paired "--sizes B" dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT
  bench 1 B_graphs 230 graphs "--sizes B" dynamic-c4 DARTOOL_COMMIT=$DARTOOL_COMMIT ) &
( bench 2 B_pair_all_accum 245 paired "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all DARTOOL_COMPILED_ACCUM_PENDING=100
  bench 2 B_graphs_all_accum 230 graphs "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all DARTOOL_COMPILED_ACCUM_PENDING=100 ) &
( bench 3 B_pair_accum 245 paired "--sizes B" dynamic-c4 DARTOOL_COMPILED_ACCUM_PENDING=100
  bench 3 B_graphs_accum 230 graphs "--sizes B" dynamic-c4 DARTOOL_COMPILED_ACCUM_PENDING=100 ) &
wait
cat $R/status; nvidia-smi -L
grep -h "resident\|^  peak\|^  reached" $R/memory_B_*.log
grep -h "paired SiT\|skip\|ms x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "FAIL\|router check\|\[ok\]" $R/check.log | cut -c1-250 | head -20
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s30_c.tgz status *.log $(ls *.json 2>/dev/null) */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
