#!/usr/bin/env bash
# Session 28: s28_a found that under torch.compile the dynamic c4 routers accumulate their sources' gradients in
# the kernel (ACCUM on 24 of 25 backward launches, SiT-B/2): a dynamic router reads v_0 and the chunk summaries
# directly (no shared prefix), so v_0 has 25 (B/2) / 57 (XL/2) reading router ops, over compiled_slots.MIN_READERS
# = 20, which was set from static c4's count (9). Session 16 measured SiT-B/2 dynamic c4 with accumulation off 3 %
# faster (H100 paired 1.368 on / 1.328 off) at the same memory; SiT-XL/2 was not measured. Here SiT-XL/2 b32, the
# bench's graphs part (step time and peak memory under CUDA graphs) and paired rounds (residual, static c4, dynamic
# c4): GPU 0 the default, GPU 1 DARTOOL_COMPILED_ACCUM=0. One nvidia-h100-x2 / h200-x2 call, ~5 min. Carry the zarr
# wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
arm() {   # arm GPU SIZE NAME ROUNDS TIMEOUT ENV...
  local G=$1 S=$2 N=$3 K=$4 TO=$5; shift 5
  env "$@" CUDA_VISIBLE_DEVICES=$G timeout $TO python3 -m dartool bench --parts graphs,paired --paired-rounds $K \
    --paired-mode cudagraphs --sizes $S --xl-batch 32 --variants dynamic-c4 --compile-budget $(( TO - 30 )) \
    --time-budget $(( TO - 10 )) --out $R/$N > $R/$N.log 2>&1
  echo "$N ($*) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
arm 0 XL XL_default 6 560 DARTOOL_COMPILED_ACCUM=1 &
arm 1 XL XL_accum0 6 560 DARTOOL_COMPILED_ACCUM=0 &
wait
cat $R/status; nvidia-smi -L
grep -h "paired\|ms/step\|mem x" $R/*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s28_b.tgz status *.log */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
