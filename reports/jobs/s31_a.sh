#!/usr/bin/env bash
# Session 31, call a (nvidia-h200-x2; x4 not lent): the first half of next_s30.sh.
#   GPU 0: ROW_PIPE_ACCUM per launch, off and on, same inputs (router_kernels_bench.py --writes fresh,accum); then
#          the float64 check's accumulating parts with it on (compiled-accum, tapped-sources, dynamic-recompute)
#   GPU 1: SiT-B/2 b256 dynamic c4 paired + graphs, every q kept, compiled accumulation on, ROW_PIPE_ACCUM on
#          (s30_c without ROW_PIPE_ACCUM: 1.305 / 1.125; all kept, accumulation off: 1.268 / 1.169)
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
source reports/jobs/bench_arm.sh
( for RA in 0 1; do
    DARTOOL_ROW_PIPE_ACCUM=$RA CUDA_VISIBLE_DEVICES=0 timeout 120 python3 benchmarks/router_kernels_bench.py \
      --shape B:256:6 --shape B:256:10 --shape XL:32:10 --query dynamic --query static --writes fresh,accum \
      --json $R/writes_rpa$RA.json > $R/writes_rpa$RA.log 2>&1
    echo "writes ROW_PIPE_ACCUM=$RA rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  done
  DARTOOL_ROW_PIPE_ACCUM=1 CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m dartool.kernels.check \
    --only compiled-accum,tapped-sources,dynamic-recompute --json $R/check.json > $R/check.log 2>&1
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( bench 1 B_pair_all_accum_rpa 245 paired "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all \
    DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROW_PIPE_ACCUM=1
  bench 1 B_graphs_all_accum_rpa 230 graphs "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all \
    DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROW_PIPE_ACCUM=1 ) &
wait
cat $R/status; nvidia-smi -L
grep -h "accum\|fresh" $R/writes_rpa*.log | head -30
grep -h "paired SiT\|skip\|ms x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "FAIL\|router check\|\[ok\]" $R/check.log | cut -c1-200 | head -12
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s31_a.tgz status *.log $(ls *.json 2>/dev/null) */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
