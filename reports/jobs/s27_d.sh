#!/usr/bin/env bash
# Session 27: why the dynamic routers' row-pipelined backward saved 4.5 ms of kernel time a step in the eager sweep
# (SiT-B/2 b256, s27_b) but nothing in the paired CUDA-graph step (s27_c: 127.0 vs 125.8 ms). benchmarks/
# step_profile.py --compiled (GPU time per kernel kind of the compiled residual and dynamic c4 steps) with the
# default (GPU 0) and DARTOOL_ROUTER_DYN_RPIPE=0 (GPU 1). One nvidia-h100-x2 / h200-x2 call, ~4 min.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
for G in 0 1; do
  ( [ $G = 1 ] && export DARTOOL_ROUTER_DYN_RPIPE=0; CUDA_VISIBLE_DEVICES=$G timeout 420 python3 \
      benchmarks/step_profile.py --size B --batch 256 --compiled --query dynamic --rows 30 > $R/profile_g$G.log 2>&1
    echo "profile GPU $G (DYN_RPIPE ${DARTOOL_ROUTER_DYN_RPIPE:-default}) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status; nvidia-smi -L
grep -h "=== \|extra\|routers + prefix" $R/profile_g*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s27_d.tgz status *.log)
echo "done after $(( $(date +%s) - T0 )) s"
