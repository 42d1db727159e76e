#!/usr/bin/env bash
# Session 28, at the new defaults (compiled_slots.MIN_PENDING = 200; DYN_ROW_PIPE_N 12 at D < 1024 again): the
# float64 check on the GPU. GPU 0: the router cases and the LayerNorm-fused ones (the dynamic routers of <= 12
# sources at D < 1024 now row-pipelined); GPU 1: dynamic recompute, compiled accumulation on / off, compiled dynamic
# saved, the model. One nvidia-h200-x2 call, ~4 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
( CUDA_VISIBLE_DEVICES=0 timeout 500 python3 -m dartool.kernels.check --only router,ln-fused --json $R/check_g0.json \
    > $R/check_g0.log 2>&1; echo "check router,ln-fused rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 500 python3 -m dartool.kernels.check \
    --only dynamic-recompute,compiled-accum,compiled-dynamic-saved,model --json $R/check_g1.json > $R/check_g1.log 2>&1
  echo "check rest rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status; nvidia-smi -L
grep -h "FAIL\|PASS" $R/check_*.log | head -40
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s28_e.tgz status *.log $(ls *.json 2>/dev/null))
echo "done after $(( $(date +%s) - T0 )) s"
