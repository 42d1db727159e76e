#!/usr/bin/env bash
# Written in session 24, NOT yet run. The paired rounds under CUDA graphs that session 24 did not get (two of its
# jobs set --time-budget below the bench's own estimate; the skip now says so). One nvidia-h100-x2 call, ~9 min:
#   GPU 0: SiT-XL/2 b64 --parts graphs,paired (H100 single run 1.117, s24_g): the bench estimates ~290 s for the
#          rounds' three models after the graphs rows, so the budget is the whole command
#   GPU 1: SiT-B/2 b256 --parts graphs,paired (H200 1.072 paired, H100 1.074 single run)
# If this comes as H200s (x2 requests have so far), run GPU 1's line alone on nvidia-h100-x1 for the H100 number.
# Session 25: ONLY=xl64 or ONLY=b256 runs that one line on GPU 0 (one nvidia-h100-x1 call each, for H100 numbers).
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
run() {  # GPU SIZE NAME [--xl-batch N]
  CUDA_VISIBLE_DEVICES=$1 timeout 560 python3 -m dartool bench --parts graphs,paired --paired-rounds 6 \
    --paired-mode cudagraphs --sizes $2 ${4:+--xl-batch $4} --variants static-c4 --compile-budget 400 \
    --time-budget 550 --out $R/$3 > $R/$3.log 2>&1
  echo "$3 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
case ${ONLY:-} in
  xl64) run 0 XL xl64 64 ;;
  b256) run 0 B b256 ;;
  *) run 0 XL xl64 64 & run 1 B b256 & wait ;;
esac
cat $R/status; nvidia-smi -L
for d in xl64 b256; do [ -f $R/$d.log ] || continue; echo "== $d"; grep -h "ms x\|paired\|MISSED\|\[met\]\|skip" $R/$d.log | cut -c1-200; done
grep -h "Traceback\|Error" -A3 $R/*.log | head -30
(cd $R && tar czf $OUT/s25_paired_rest${ONLY:+_$ONLY}.tgz status *.log $(ls -d xl64 b256 2>/dev/null))
echo "done after $(( $(date +%s) - T0 )) s"
