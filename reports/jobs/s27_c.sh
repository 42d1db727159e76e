#!/usr/bin/env bash
# Session 27: the dynamic routers' row-pipelined backward at its new per-shape default (DYN_ROW_PIPE_N: 12 at
# D < 1024, off at D >= 1024; s27_b: SiT-B/2 b256 dynamic router backward 19.90 -> 15.40 ms a step in the eager
# sweep, H200). GPU 0: SiT-B/2 b256 paired rounds under CUDA graphs at the default; GPU 1: the same with
# DARTOOL_ROUTER_DYN_RPIPE=0 (the baseline); GPUs 2 and 3: the float64 check on the GPU with every dynamic router
# row-pipelined (DARTOOL_ROUTER_DYN_RPIPE=18, D = 1152 too; the interpreter cannot show an asynchronous copy reading
# a q the previous row's dq overwrote): GPU 2 the router cases, GPU 3 LayerNorm-fused, dynamic recompute, compiled
# dynamic, model. One nvidia-h100-x4 (or h200-x4) call, ~8 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
for G in 0 1; do
  ( [ $G = 1 ] && export DARTOOL_ROUTER_DYN_RPIPE=0; CUDA_VISIBLE_DEVICES=$G timeout 560 python3 -m dartool bench \
      --parts graphs,paired --paired-rounds 6 --paired-mode cudagraphs --sizes B --variants static-c4,dynamic-c4 \
      --compile-budget 400 --time-budget 540 --out $R/paired_g$G > $R/paired_g$G.log 2>&1
    echo "paired B GPU $G (DYN_RPIPE ${DARTOOL_ROUTER_DYN_RPIPE:-default}) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
( CUDA_VISIBLE_DEVICES=2 DARTOOL_ROUTER_DYN_RPIPE=18 timeout 560 python3 -m dartool.kernels.check --only router \
    --json $R/check_router.json > $R/check_router.log 2>&1
  echo "check router rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=3 DARTOOL_ROUTER_DYN_RPIPE=18 timeout 560 python3 -m dartool.kernels.check \
    --only ln-fused,dynamic-recompute,compiled-dynamic-saved,model --json $R/check_rest.json > $R/check_rest.log 2>&1
  echo "check rest rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
wait
cat $R/status; nvidia-smi -L
grep -h "paired\|ms/step" $R/paired_g*.log | cut -c1-200
grep -h "FAIL\|PASS" $R/check_*.log | head -20
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s27_c.tgz status *.log $(ls *.json 2>/dev/null) paired_g*)
echo "done after $(( $(date +%s) - T0 )) s"
