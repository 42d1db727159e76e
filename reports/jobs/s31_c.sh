#!/usr/bin/env bash
# Session 31, call c (one nvidia-h200): (1) the model cuda tests again after fixing the dynamic one (s31_b: it
# expected every router to run the recomputing op; since session 29 the last two thirds of a narrow model keep q);
# (2) where in-graph accumulation's time goes at SiT-B/2 b256 dynamic c4 with every q kept: the compiled step's
# kernels by kind, accumulation forced on (PENDING=100) vs off (the default at B/2).
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 150 python3 -m pytest -v -rs -p no:cacheprovider -m cuda tests/test_router_kernel.py -k "cuda_model" \
  --durations=0 > $R/cuda_tests_model.txt 2>&1
echo "cuda model tests rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
for P in 100 200; do
  DARTOOL_SAVE_QUERY_LAST=all DARTOOL_COMPILED_ACCUM_PENDING=$P timeout 170 python3 benchmarks/step_profile.py \
    --size B --batch 256 --query dynamic --chunk 4 --compiled --rows 40 > $R/profile_B_all_pending$P.txt 2>&1
  echo "profile PENDING=$P rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
done
cat $R/status; nvidia-smi -L
grep -hE "PASSED|FAILED|passed|failed" $R/cuda_tests_model.txt | cut -c1-200
grep -h -A12 "kernel time by kind" $R/profile_*.txt
grep -h "=== " $R/profile_*.txt
grep -h "Traceback" -A3 $R/*.txt | head
(cd $R && tar czf $OUT/s31_c.tgz status *.txt)
echo "done after $(( $(date +%s) - T0 )) s"
