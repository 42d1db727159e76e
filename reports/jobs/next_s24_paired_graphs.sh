#!/usr/bin/env bash
# Written in session 23, NOT yet run. Is SiT-XL/2 static c4 under CUDA graphs at or under 1.10? Its single-run
# ratios (1.102-1.110 on H200s, 1.105 on an H100) sit within the residual's own +-1.5 % run-to-run movement.
# dartool bench --paired-mode cudagraphs (new in session 23, untested on a GPU): residual, static c4 and dynamic c4
# alive in one process, replayed as CUDA graphs, timed in 6 interleaved rounds; the graphs rows' time targets are
# then judged on the rounds' medians. One nvidia-h100-x2 call, ~6 min:
#   GPU 0: SiT-XL/2 b32: --parts graphs,paired (the graphs rows give memory; the rounds give time)
#   GPU 1: SiT-B/2 b256: the same
# Risk: three models' CUDA-graph pools in one process (29 GB each alone at B/2 b256) may not fit an 80 GB H100 if
# the trees do not share memory across roots; x2 requests have come as H200s (141 GB) so far. An OOM shows in the
# log and the bench's skipped list, not as a crash.
# Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
run() {  # GPU SIZE NAME [--xl-batch N]
  CUDA_VISIBLE_DEVICES=$1 timeout 520 python3 -m dartool bench --parts graphs,paired --paired-rounds 6 \
    --paired-mode cudagraphs --sizes $2 ${4:+--xl-batch $4} --variants static-c4 --compile-budget 300 \
    --time-budget 500 --out $R/$3 > $R/$3.log 2>&1
  echo "$3 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
}
run 0 XL xl32 32 &
run 1 B b256 &
wait
cat $R/status; nvidia-smi -L
for d in xl32 b256; do echo "== $d"; grep -h "ms x\|paired" $R/$d.log | cut -c1-180; done
grep -h "Traceback\|Error" -A3 $R/*.log | head -30
(cd $R && tar czf $OUT/s24_paired_graphs.tgz status *.log xl32 b256)
echo "done after $(( $(date +%s) - T0 )) s"
