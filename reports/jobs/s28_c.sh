#!/usr/bin/env bash
# Session 28 (after s28_b: at SiT-XL/2 b32 accumulation off was no faster, 1.417 vs 1.422, and took more memory,
# 1.139 vs 1.105): SiT-B/2 b256. s28_a found that under torch.compile the dynamic c4 routers accumulate their
# sources' gradients in the kernel (ACCUM on 24 of 25 backward launches, SiT-B/2): a dynamic router reads v_0 and the chunk summaries
# directly (no shared prefix), so v_0 has 25 (B/2) / 57 (XL/2) reading router ops, over compiled_slots.MIN_READERS
# = 20, which was set from static c4's count (9). Session 16 measured SiT-B/2 dynamic c4 with accumulation off 3 %
# faster (H100 paired 1.368 on / 1.328 off) at the same memory. Off, the row-pipelined dynamic backward
# (DARTOOL_ROUTER_DYN_RPIPE=12; it never runs on accumulating launches) can run under compile too. GPU 0: the
# default (graphs part: time and memory; paired rounds), then accumulation off + DYN_RPIPE=12 (paired); GPU 1:
# accumulation off (graphs, paired), then off + DYN_RPIPE=12 (paired, the second card's replicate). One
# nvidia-h200-x2 call, ~9 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
arm() {   # arm GPU SIZE NAME PARTS TIMEOUT ENV...
  local G=$1 S=$2 N=$3 P=$4 TO=$5 K=6; shift 5
  env "$@" CUDA_VISIBLE_DEVICES=$G timeout $TO python3 -m dartool bench --parts $P --paired-rounds $K \
    --paired-mode cudagraphs --sizes $S --xl-batch 32 --variants dynamic-c4 --compile-budget $(( TO - 30 )) \
    --time-budget $(( TO - 10 )) --out $R/$N > $R/$N.log 2>&1
  echo "$N ($*) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
( arm 0 B B_default graphs,paired 300 DARTOOL_COMPILED_ACCUM=1
  arm 0 B B_accum0_rpipe12_g0 paired 240 DARTOOL_COMPILED_ACCUM=0 DARTOOL_ROUTER_DYN_RPIPE=12 ) &
( arm 1 B B_accum0 graphs,paired 300 DARTOOL_COMPILED_ACCUM=0
  arm 1 B B_accum0_rpipe12_g1 paired 240 DARTOOL_COMPILED_ACCUM=0 DARTOOL_ROUTER_DYN_RPIPE=12 ) &
wait
cat $R/status; nvidia-smi -L
grep -h "paired\|ms/step\|mem x" $R/*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s28_c.tgz status *.log */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
