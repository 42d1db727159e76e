#!/usr/bin/env bash
# Written in session 30, not run as such: session 31 ran it in two x2 calls (x4 not lent), s31_a.sh and s31_b.sh.
# Written in session 30, not run (its device time was spent): KERNEL_NOTES "Session 30 — Next" 1 and 3, one
# nvidia-h200-x4 call, ~9.5 min. Carry the zarr wheels and .commit.
#   GPU 0: ROW_PIPE_ACCUM (accumulating launches on the row-pipelined backward) per launch, on and off, same
#          inputs (router_kernels_bench.py --writes fresh,accum); then the float64 check's accumulating parts with
#          it on (compiled-accum, tapped-sources)
#   GPU 1: SiT-B/2 b256 dynamic c4 paired + graphs row, every q kept, compiled accumulation on, ROW_PIPE_ACCUM on
#          (s30_c without ROW_PIPE_ACCUM: 1.305 / 1.125; all kept, accumulation off: 1.268 / 1.169)
#   GPU 2: the same at the default queries (s30_c: 1.325 / 1.091 accumulation on; 1.282 / 1.120 off)
#   GPU 3: the CUDA tests (pytest -m cuda; cut off after 480 s in s30_f with 2 passed), split: the model /
#          probe-alpha ones here, then the full float64 check (what the remaining test runs); the probe's on GPU 0
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
  echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_probe.py \
    > $R/cuda_tests_probe.txt 2>&1
  echo "cuda tests (probe) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( bench 1 B_pair_all_accum_rpa 245 paired "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all \
    DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROW_PIPE_ACCUM=1
  bench 1 B_graphs_all_accum_rpa 230 graphs "--sizes B" dynamic-c4 DARTOOL_SAVE_QUERY_LAST=all \
    DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROW_PIPE_ACCUM=1 ) &
( bench 2 B_pair_accum_rpa 245 paired "--sizes B" dynamic-c4 DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROW_PIPE_ACCUM=1
  bench 2 B_graphs_accum_rpa 230 graphs "--sizes B" dynamic-c4 DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROW_PIPE_ACCUM=1 ) &
( # test_cuda_fused_router_matches_float64_reference is the full float64 check (~250 s alone): run here as the
  # check itself after the other CUDA tests of the file, which compile models
  CUDA_VISIBLE_DEVICES=3 timeout 300 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_router_kernel.py \
    -k "not float64_reference" > $R/cuda_tests.txt 2>&1
  echo "cuda tests (router_kernel) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
  CUDA_VISIBLE_DEVICES=3 timeout 260 python3 -m dartool.kernels.check --json $R/check_full.json > $R/check_full.log 2>&1
  echo "full check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status; nvidia-smi -L
grep -h "accum\|fresh" $R/writes_rpa*.log | head -24
grep -h "paired SiT\|skip\|ms x\|met\]\|MISSED" $R/*.log | cut -c1-200
grep -h "FAIL\|router check\|\[ok\]" $R/check.log | cut -c1-200 | head -12
grep -hE "passed|failed" $R/cuda_tests*.txt | tail -4
grep -h "router check" $R/check_full.log
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/next_s30.tgz status *.log *.txt $(ls *.json 2>/dev/null) */*.json */*.md)
echo "done after $(( $(date +%s) - T0 )) s"
