#!/usr/bin/env bash
# Session 31, call e (one nvidia-h200, the last ~290 s of device time): s31_d's accumulating-launch configuration
# (pipe 3: per launch -18 / -24 % at B:256:6 / :10) gave no step gain (paired 1.307 vs 1.305). Does it reach the
# step's router backwards? The compiled B/2 b256 dynamic c4 step's kernels by kind, every q kept, accumulation
# on, DARTOOL_ROUTER_BWD_ACCUM=pipe=3 (s31_c without it: router bwd 23.3 ms, accumulation off 15.3 ms).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
DARTOOL_SAVE_QUERY_LAST=all DARTOOL_COMPILED_ACCUM_PENDING=100 DARTOOL_ROUTER_BWD_ACCUM=pipe=3 timeout 150 \
  python3 benchmarks/step_profile.py --size B --batch 256 --query dynamic --chunk 4 --compiled --rows 40 \
  > $R/profile_B_all_pending100_pipe3.txt 2>&1
echo "profile rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status
grep -h -A8 "kernel time by kind" $R/profile_*.txt; grep -h "=== \|_router_bwd_kernel" $R/profile_*.txt
(cd $R && tar czf $OUT/s31_e.tgz status *.txt)
