#!/usr/bin/env bash
# Session 27: the row-pipelined backward for dynamic routers (router_triton.DYN_ROW_PIPE_N, new, off by default),
# timed inside DAR dynamic c4 steps: s27_a found the dynamic backward at ~140 us a launch at N = 1 and 250 at N = 4
# (static's row-pipelined backward: 58 / 142). SiT-XL/2 b32 on GPU 0 (with the per-launch split), SiT-B/2 b256 on
# GPU 1; on GPUs 2 and 3 the bench's paired rounds under CUDA graphs at SiT-XL/2 b32 (residual, static c4, dynamic
# c4) with dynamic routers of <= 8 sources row-pipelined (GPU 2) and without (GPU 3, the baseline). All four in
# parallel: one nvidia-h100-x4 call, ~7 min. Carry the zarr wheels and .commit.
source reports/jobs/gpu_env.sh >/dev/null
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
T0=$(date +%s)
R=/tmp/r; mkdir -p $R
( CUDA_VISIBLE_DEVICES=0 timeout 540 python3 benchmarks/step_kernel_sweep.py --size XL --batch 32 --query dynamic \
    --by-launch --json $R/dyn_rpipe_XL32.json --variant "" --variant "rt.dynrpipe=4" --variant "rt.dynrpipe=8" \
    --variant "rt.dynrpipe=8 rt.rslot=1" --variant "rt.dynrpipe=18" --variant "rt.dynrpipe=18 rt.rslot=1" \
    > $R/dyn_rpipe_XL32.log 2>&1; echo "XL32 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
( CUDA_VISIBLE_DEVICES=1 timeout 540 python3 benchmarks/step_kernel_sweep.py --size B --batch 256 --query dynamic \
    --by-launch --json $R/dyn_rpipe_B256.json --variant "" --variant "rt.dynrpipe=4" --variant "rt.dynrpipe=8" \
    --variant "rt.dynrpipe=12" --variant "rt.dynrpipe=12 rt.rpipe=3" \
    > $R/dyn_rpipe_B256.log 2>&1; echo "B256 rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
for G in 2 3; do
  ( [ $G = 2 ] && export DARTOOL_ROUTER_DYN_RPIPE=8; CUDA_VISIBLE_DEVICES=$G timeout 560 python3 -m dartool bench \
      --parts graphs,paired --paired-rounds 6 --paired-mode cudagraphs --sizes XL --xl-batch 32 --variants static-c4 \
      --compile-budget 400 --time-budget 540 --out $R/paired_g$G > $R/paired_g$G.log 2>&1
    echo "paired GPU $G (DYN_RPIPE ${DARTOOL_ROUTER_DYN_RPIPE:-0}) rc $? at $(( $(date +%s) - T0 )) s" >> $R/status ) &
done
wait
cat $R/status; nvidia-smi -L
grep -hv "Warning\|_warn_once" $R/dyn_rpipe_*.log | grep -v "^    [bf]wd N" | cut -c1-220
grep -h "paired\|ms/step" $R/paired_g*.log | cut -c1-200
grep -h "Traceback" -A3 $R/*.log | head -20
(cd $R && tar czf $OUT/s27_b.tgz status *.log $(ls *.json 2>/dev/null) paired_g*)
echo "done after $(( $(date +%s) - T0 )) s"
