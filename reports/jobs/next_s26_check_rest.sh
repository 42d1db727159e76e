#!/usr/bin/env bash
# Session 26: the float64 check's parts that s26_c (router, ln-fused, shared-prefix with LEAN=3) did not run and
# s26_e's full check did not reach in its 450 s on an H100: tapped sources (D = 1152: in-kernel accumulation, the
# unpipelined few-source loop with LEAN's direct partial), the shared-prefix model, the dynamic recompute, the
# compiled ones and the model, at the new default. One GPU, ~6-9 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
timeout 560 python3 -m dartool.kernels.check --json $R/check_rest.json \
  --only tapped-sources,shared-prefix-model,dynamic-recompute,compiled-dynamic-saved,compiled-accum,model \
  > $R/check_rest.log 2>&1
echo "check rc $? at $(( $(date +%s) - T0 )) s" >> $R/status
cat $R/status; nvidia-smi -L
grep -v "Warn\|warn" $R/check_rest.log | tail -25 | cut -c1-250
(cd $R && tar czf $OUT/s26_check_rest.tgz status *.log *.json)
echo "done after $(( $(date +%s) - T0 )) s"
